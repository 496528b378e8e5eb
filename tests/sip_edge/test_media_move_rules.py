"""The rules under a media move: when a worker counts as lost or draining (the registry beats), and
the offer that moves a call's audio to a new leg (RFC 3264 section 8, RFC 4568 section 7.1.4)."""

from __future__ import annotations

import base64

from activecall.registry import WorkerInfo
from activecall.sip_edge.app.failover import Liveness
from activecall.sip_edge.app.legs import Leg
from activecall.sip_edge.app.reoffer import media_reoffer, moved_answer
from activecall.sip_edge.sip.syntax.sdp import (
    SUITE_AES_CM_128_HMAC_SHA1_32,
    SessionDescription,
    SrtpMode,
    negotiate_answer,
    process_answer,
    update_answer,
)

FAILOVER_AFTER = 1.5


def beat(worker_id: str, ts: float, draining: bool = False) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id, role="media", host="h", pid=1, metrics_port=0, started=0.0, ts=ts, draining=draining
    )


def test_a_worker_started_again_under_its_id_lost_the_legs_opened_before() -> None:
    """A supervisor starts a killed media worker again under the same id before its beat could go
    stale: the beats go on, but the legs of the old process died with it."""
    liveness = Liveness(FAILOVER_AFTER)
    first = beat("m1", 1000.0)
    first.started = 900.0
    liveness.observe([first], now=10.0, wall=1000.0)
    assert liveness.verdict("m1", 10.0, opened_at=950.0) is None
    again = beat("m1", 1001.0)
    again.started = 1000.8
    liveness.observe([again], now=11.0, wall=1001.1)
    assert liveness.verdict("m1", 11.0, opened_at=950.0) == "lost"  # a leg of the old process
    assert liveness.verdict("m1", 11.0, opened_at=1001.2) is None  # a leg of the new one
    assert liveness.troubled(11.0)
    liveness.forget_gone({"m1"}, reborn_in_use=set())  # no leg of the old process is left
    assert not liveness.troubled(11.0)
    assert liveness.verdict("m1", 11.0, opened_at=950.0) is None


def test_a_worker_is_lost_once_its_beat_stops_changing_for_failover_after() -> None:
    liveness = Liveness(FAILOVER_AFTER)
    liveness.observe([beat("m1", 1000.0)], now=10.0, wall=1000.0)
    liveness.observe([beat("m1", 1000.5)], now=10.5, wall=1000.5)
    liveness.observe([beat("m1", 1000.5)], now=11.9, wall=1001.9)
    assert liveness.verdict("m1", 11.9) is None
    liveness.observe([beat("m1", 1000.5)], now=12.1, wall=1002.1)
    assert liveness.verdict("m1", 12.1) == "lost"
    assert liveness.stale(12.1) == {"m1"}
    assert liveness.heard_until("m1") == 1000.5


def test_the_edges_own_clock_decides_not_the_workers() -> None:
    liveness = Liveness(FAILOVER_AFTER)
    # The worker's clock is an hour behind: its beats look old, but they keep changing.
    for step in range(5):
        liveness.observe([beat("m1", 1000.0 + step)], now=10.0 + step, wall=4600.0 + step)
    assert liveness.verdict("m1", 14.0) is None


def test_a_beat_already_old_at_first_sight_is_lost_and_a_missing_entry_too() -> None:
    liveness = Liveness(FAILOVER_AFTER)
    liveness.observe([beat("old", 990.0), beat("fresh", 999.9)], now=5.0, wall=1000.0)
    assert liveness.verdict("old", 5.0) == "lost"
    assert liveness.verdict("fresh", 5.0) is None
    assert liveness.verdict("never-seen", 5.0) == "lost"
    liveness.observe([beat("fresh", 1000.4)], now=5.4, wall=1000.4)
    assert liveness.verdict("old", 5.4) == "lost"  # gone from the registry (stopped or pruned)
    assert liveness.heard_until("old") == 990.0


def test_a_live_worker_that_drains_asks_for_its_calls_to_move() -> None:
    liveness = Liveness(FAILOVER_AFTER)
    liveness.observe([beat("m1", 1000.0, draining=True)], now=1.0, wall=1000.0)
    assert liveness.verdict("m1", 1.0) == "draining"
    liveness.observe([beat("m1", 1000.0, draining=True)], now=3.0, wall=1002.0)
    assert liveness.verdict("m1", 3.0) == "lost"  # a draining worker that stopped beating is lost


def test_after_an_unreadable_registry_every_worker_gets_a_fresh_failover_after() -> None:
    liveness = Liveness(FAILOVER_AFTER)
    liveness.observe([beat("m1", 1000.0)], now=1.0, wall=1000.0)
    # Redis was away for 5 s: the beat did not change, because it could not be written.
    liveness.observe([beat("m1", 1000.0)], now=6.0, wall=1005.0)
    liveness.restart_clocks(6.0)
    assert liveness.verdict("m1", 6.0) is None
    assert liveness.verdict("m1", 7.6) == "lost"


OFFER = (
    "v=0\r\no=- 11 11 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    "m=audio 4000 RTP/SAVP 8 0 98\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:98 telephone-event/8000\r\na=fmtp:98 0-16\r\na=sendonly\r\n"
    "a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:" + base64.b64encode(bytes(range(30))).decode() + "\r\n"
)


def leg(port: int, fill: int) -> Leg:
    key = base64.b64encode(bytes([fill]) * 30).decode()
    return Leg(f"l{port}", "media-1", "10.0.0.5", port, True, "AES_CM_128_HMAC_SHA1_80", key)


def test_the_reoffer_moves_only_the_audio_stream_and_keys_it_anew() -> None:
    first = leg(30000, 1)
    answer = negotiate_answer(
        SessionDescription.parse(OFFER), "198.51.100.7", first.port, srtp=SrtpMode.OPTIONAL,
        local_crypto_factory=first.crypto,
    )  # fmt: skip
    ours = answer.sdp
    new = leg(31000, 2)
    offer = media_reoffer(ours, answer, new, "198.51.100.7")
    assert (offer.origin.session_id, offer.origin.session_version) == (
        ours.origin.session_id,
        ours.origin.session_version + 1,
    )
    video, audio = offer.media
    assert (video.media, video.port) == ("video", 0)  # refused before, still refused, still there
    assert (audio.port, audio.proto, audio.formats) == (31000, "RTP/SAVP", ["8", "98"])
    assert audio.direction is not None and audio.direction.value == "recvonly"  # the peer holds us
    (crypto,) = audio.crypto()
    assert crypto.suite == SUITE_AES_CM_128_HMAC_SHA1_32 and crypto.key_salt == bytes([2]) * 30
    assert offer.media_connection(audio) is not None
    assert offer.media_connection(audio).address == "198.51.100.7"  # type: ignore[union-attr]


def test_after_the_move_a_reoffer_from_the_peer_is_answered_from_the_new_leg() -> None:
    first = leg(30000, 1)
    answer = negotiate_answer(
        SessionDescription.parse(OFFER), "198.51.100.7", first.port, local_crypto_factory=first.crypto
    )
    new = leg(31000, 2)
    offer = media_reoffer(answer.sdp, answer, new, "198.51.100.7")
    their_answer = SessionDescription.parse(
        "v=0\r\no=- 11 12 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=video 0 RTP/AVP 96\r\n"
        "m=audio 4000 RTP/SAVP 8 98\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:98 telephone-event/8000\r\n"
        "a=sendonly\r\na=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:"
        + base64.b64encode(bytes(range(30))).decode()
        + "\r\n"
    )
    kept = moved_answer(process_answer(offer, their_answer), answer, offer, new, "198.51.100.7")
    resumed = update_answer(kept, SessionDescription.parse(OFFER.replace("a=sendonly", "a=sendrecv")))
    audio = resumed.sdp.media[1]
    assert audio.port == 31000 and audio.direction is not None and audio.direction.value == "sendrecv"
    assert audio.crypto()[0].key_salt == bytes([2]) * 30  # the new leg's key is kept
    assert resumed.sdp.origin.session_version == offer.origin.session_version + 1


def test_a_worker_gone_from_the_registry_is_forgotten_once_no_call_is_on_it() -> None:
    liveness = Liveness(FAILOVER_AFTER)
    liveness.observe([beat("m1", 1000.0), beat("m2", 1000.0)], now=1.0, wall=1000.0)
    liveness.observe([beat("m2", 1000.4)], now=1.4, wall=1000.4)  # m1 stopped and took its entry along
    assert liveness.troubled(1.4)
    liveness.forget_gone(in_use={"m1"})  # a call still has its leg there
    assert liveness.troubled(1.4) and liveness.verdict("m1", 1.4) == "lost"
    liveness.forget_gone(in_use=set())
    assert not liveness.troubled(1.4)
