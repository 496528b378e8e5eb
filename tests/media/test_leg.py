"""The audio paths of a leg over real sockets, real SRTP and real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from activecall.bus import Bus
from activecall.config import Config
from activecall.media import leg as leg_module
from activecall.media import reports as reports_module
from activecall.media.dtmf import TelephoneEvent
from activecall.media.g711 import PCMA
from activecall.media.metrics import STATS
from activecall.media.rtcp import (
    RtcpReportBlock,
    RtcpRrPacket,
    RtcpSrPacket,
    ntp_middle32,
    serialize_compound,
)
from activecall.media.srtp import format_sdes_inline, generate_key_salt
from activecall.media.worker import MediaWorker
from activecall.messages import (
    AudioChunk,
    DtmfReceived,
    MediaTimeout,
    PlaybackFinished,
    PlaybackStarted,
    SendDtmf,
    StopPlayback,
    TurnCancelled,
)
from activecall.testing.media import LegClient, RtpPeer, ncc_peak, poll, voiced

OpenLeg = Callable[..., Awaitable[LegClient]]
StartWorker = Callable[..., Awaitable[MediaWorker]]


async def say(
    bus: Bus, client: LegClient, turn_id: str, audio: np.ndarray, rate: int = 8000, chunk_ms: int = 200
) -> None:
    """Put a turn on the call's audio:out as the tts does: chunks with seq, the last one flagged."""
    size = rate * chunk_ms // 1000
    pieces = [audio[i : i + size] for i in range(0, len(audio), size)]
    for seq, piece in enumerate(pieces):
        chunk = AudioChunk(
            call_id=client.call_id,
            turn_id=turn_id,
            seq=seq,
            pcm=piece.astype("<i2").tobytes(),
            sample_rate=rate,
            last=seq == len(pieces) - 1,
        )
        await bus.publish(bus.keys.audio_out(client.call_id), chunk)


async def wait_events(client: LegClient, kind: type, count: int = 1) -> list:
    events = await poll(client.events, lambda events: sum(isinstance(e, kind) for e in events) >= count)
    return [e for e in events if isinstance(e, kind)]


@pytest.mark.parametrize("srtp", [True, False])
async def test_caller_audio_reaches_audio_in_intact(
    start_worker: StartWorker, media_config: Config, open_leg: OpenLeg, srtp: bool
) -> None:
    media_config.media.jitter_min_ms = 60  # room for a busy test machine's timer jitter
    worker = await start_worker(media_config)
    client = await open_leg(worker, srtp=srtp)
    sent = voiced(1.6)
    await client.peer.play(sent)
    received = await poll(client.audio_in, lambda audio: len(audio) >= len(sent) - 160)
    score, lag = ncc_peak(sent[800:-800], received, max_lag=2400)
    assert score >= 0.9, (score, lag)
    assert lag == 800  # nothing lost or concealed before the speech: the frames line up exactly
    frames = await client.bus.read({client.bus.keys.audio_in(client.call_id): "0"}, count=1000)
    assert [(e.message.seq, e.message.at_ms) for e in frames[:3]] == [(0, 0), (1, 20), (2, 40)]  # type: ignore[attr-defined]


async def test_agent_audio_is_paced_continuous_and_marked(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=True)
    peer = client.peer
    await peer.wait_for(lambda: len(peer.received) >= 5)  # silence flows before any turn
    agent = voiced(1.0, f0=180.0, seed=2.0)
    await say(bus, client, "t1", agent)
    await say(bus, client, "t1", agent[:1600])  # a redelivery of the first chunk: ignored
    (finished,) = await wait_events(client, PlaybackFinished)
    assert finished.turn_id == "t1" and finished.played_ms == 1000
    packets = [r.packet for r in peer.received]
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    stamps = [p.timestamp for p in packets]
    assert all((b - a) & 0xFFFFFFFF == 160 for a, b in zip(stamps, stamps[1:], strict=False))
    assert len({p.ssrc for p in packets}) == 1
    markers = [i for i, p in enumerate(packets) if p.marker]
    silence = bytes([0xFF]) * 160
    first_audio = next(i for i, p in enumerate(packets) if p.payload != silence)
    assert markers == [0, first_audio]
    played = peer.audio()[first_audio * 160 : first_audio * 160 + 8000]
    score, lag = ncc_peak(agent, np.concatenate([played, np.zeros(160, np.int16)]), max_lag=160)
    assert score >= 0.9 and lag == 0
    assert [type(e) for e in await client.events()] == [PlaybackStarted, PlaybackFinished]


async def test_agent_audio_at_16khz_is_resampled(bus: Bus, worker: MediaWorker, open_leg: OpenLeg) -> None:
    client = await open_leg(worker, srtp=False, codec=PCMA)
    await say(bus, client, "t16", voiced(1.0, rate=16000, f0=180.0), rate=16000)
    (finished,) = await wait_events(client, PlaybackFinished)
    assert finished.played_ms == 1000
    heard = client.peer.audio()
    score, _ = ncc_peak(voiced(0.6, f0=180.0)[800:], heard, max_lag=len(heard) - 4000)
    assert score >= 0.9


async def test_stop_playback_cancels_the_turn_and_its_late_chunks(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=False)
    await say(bus, client, "t1", voiced(3.0, f0=180.0)[:16000], chunk_ms=200)  # 2 s, no `last` yet
    await wait_events(client, PlaybackStarted)
    await client.command(StopPlayback(turn_id="t1"))
    (cancelled,) = await wait_events(client, TurnCancelled)
    assert cancelled.reason == "stopped"
    (finished,) = await wait_events(client, PlaybackFinished)
    assert 0 < finished.played_ms < 2000
    count = len(client.peer.received)
    await say(bus, client, "t1", voiced(0.4, f0=180.0))  # more of the stopped turn: dropped
    await client.peer.wait_for(lambda: len(client.peer.received) >= count + 25)
    silence = bytes([0xFF]) * 160
    assert all(r.packet.payload == silence for r in client.peer.received[count + 3 :])


async def test_forged_tampered_and_replayed_srtp_is_dropped_and_counted(
    worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=True)
    peer = client.peer
    auth, replay = STATS.srtp_failures["auth"], STATS.srtp_failures["replay"]
    good = peer.send_frame(voiced(0.02))
    tampered = bytearray(peer.packet(bytes(160)))
    tampered[20] ^= 0x01
    peer.send_raw(bytes(tampered))
    forged = RtpPeer(srtp=True)  # the right header, the wrong key
    forged.ssrc, forged.seq = peer.ssrc, peer.seq
    forged.connect(peer.remote, client.opened.crypto_key)  # type: ignore[arg-type, union-attr]
    peer.send_raw(forged.packet(bytes(160)))
    peer.send_raw(good)  # a replay of a packet already accepted
    peer.send_frame(voiced(0.02))
    leg = worker.legs[client.leg_id]
    await peer.wait_for(lambda: leg.reports.received.received == 2)
    assert STATS.srtp_failures["auth"] - auth == 2
    assert STATS.srtp_failures["replay"] - replay == 1
    assert leg.session is not None and (leg.session.auth_failures, leg.session.replays) == (2, 1)
    assert leg.reports.received.received == 2


@pytest.mark.parametrize("srtp", [True, False])
async def test_latching_follows_the_peer_source(worker: MediaWorker, open_leg: OpenLeg, srtp: bool) -> None:
    client = await open_leg(worker, srtp=srtp)
    peer = client.peer
    decoy = await RtpPeer().start()  # the address the SDP names; the peer really sends from elsewhere
    try:
        assert (await client.update(remote_port=decoy.port)).ok
        await decoy.wait_for(lambda: len(decoy.received) >= 2)
        peer.send_frame(voiced(0.02))
        await peer.wait_for(lambda: len(peer.received) >= 2)  # latched to the source of the first packet
        new_port = await peer.move()
        needed = 1 if srtp else leg_module.RELATCH_PACKETS
        for _ in range(needed):
            peer.send_frame(voiced(0.02))
        await peer.wait_for(lambda: any(r.local_port == new_port for r in peer.received))
        leg = worker.legs[client.leg_id]
        assert leg.latched == ("127.0.0.1", new_port)
        assert (
            leg.reports.received.received == 2
        )  # plain RTP: the packets before the move was believed are dropped
    finally:
        decoy.close()


async def test_plain_rtp_from_a_stray_source_does_not_move_the_latch(
    worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=False)
    peer = client.peer
    leg = worker.legs[client.leg_id]
    peer.send_frame(voiced(0.02))
    await peer.wait_for(lambda: leg.reports.received.received == 1)
    stray = await RtpPeer().start()
    try:
        stray.connect(peer.remote)  # type: ignore[arg-type]
        dropped = STATS.dropped["source"]
        for _ in range(2):  # never RELATCH_PACKETS in a row: the real peer keeps talking in between
            for _ in range(leg_module.RELATCH_PACKETS - 1):
                stray.send_frame(voiced(0.02))
                await asyncio.sleep(0.005)
            peer.send_frame(voiced(0.02))
            await asyncio.sleep(0.005)
        await peer.wait_for(lambda: leg.reports.received.received == 3)
        assert leg.latched == ("127.0.0.1", peer.port)
        assert STATS.dropped["source"] - dropped == 2 * (leg_module.RELATCH_PACKETS - 1)
    finally:
        stray.close()


async def test_dtmf_in_is_reported_once(worker: MediaWorker, open_leg: OpenLeg) -> None:
    client = await open_leg(worker, srtp=True)
    peer = client.peer
    await peer.play(np.zeros(800, np.int16))
    for data in peer.dtmf_packets("7", duration_ms=120):
        peer.send_raw(data)
        await asyncio.sleep(0.02)
    await peer.play(np.zeros(1600, np.int16))
    (event,) = await wait_events(client, DtmfReceived)
    assert (event.digit, event.duration_ms) == ("7", 120)
    assert len([e for e in await client.events() if isinstance(e, DtmfReceived)]) == 1


async def test_dtmf_out_sends_rfc4733_events_with_three_end_packets(
    worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=True)
    peer = client.peer
    await peer.wait_for(lambda: len(peer.received) >= 3)
    await client.command(SendDtmf(digits="1#", duration_ms=100))
    await peer.wait_for(lambda: sum(r.packet.payload_type == 101 for r in peer.received) >= 14)
    await peer.wait_for(lambda: len(peer.received) >= 60)
    packets = [r.packet for r in peer.received]
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    events = [(p, TelephoneEvent.parse(p.payload)) for p in packets if p.payload_type == 101]
    one, pound = events[:7], events[7:]
    for group, code in ((one, 1), (pound, 11)):
        assert [e.event for _, e in group] == [code] * 7
        assert [p.marker for p, _ in group] == [True] + [False] * 6
        assert [e.duration for _, e in group] == [160, 320, 480, 640, 800, 800, 800]
        assert [e.end for _, e in group] == [False] * 4 + [True] * 3
        assert len({p.timestamp for p, _ in group}) == 1
    assert pound[0][0].timestamp - one[0][0].timestamp == 160 * (7 + leg_module.DTMF_GAP_TICKS)
    audio_after = next(
        p
        for p in packets
        if p.payload_type == 0 and p.sequence_number == (pound[-1][0].sequence_number + 1) & 0xFFFF
    )
    assert audio_after.timestamp == pound[0][0].timestamp + 160 * 7


async def test_rtp_timeout_is_reported(
    start_worker: StartWorker, media_config: Config, open_leg: OpenLeg
) -> None:
    media_config.media.rtp_timeout = 0.3
    worker = await start_worker(media_config)
    client = await open_leg(worker, srtp=False)
    client.peer.send_frame(voiced(0.02))
    (event,) = await wait_events(client, MediaTimeout)
    assert 0.3 <= event.idle_s < 1.0


async def test_rtcp_reports_flow_both_ways(
    monkeypatch: pytest.MonkeyPatch, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    monkeypatch.setattr(reports_module, "RTCP_INTERVAL_S", 0.2)
    client = await open_leg(worker, srtp=True, rtcp_mux=True)
    peer = client.peer
    await peer.play(voiced(0.4))
    last_seq = (peer.seq - 1) & 0xFFFF

    def final_report() -> RtcpSrPacket | None:
        for compound in peer.rtcp:
            sr = compound[0]
            if (
                isinstance(sr, RtcpSrPacket)
                and sr.reports
                and sr.reports[0].highest_sequence & 0xFFFF == last_seq
            ):
                return sr
        return None

    await peer.wait_for(lambda: final_report() is not None, 3)
    report = final_report()
    assert report is not None and report.sender_info.packet_count > 0
    (block,) = report.reports
    assert (block.ssrc, block.packets_lost, block.fraction_lost) == (peer.ssrc, 0, 0)
    assert not any(isinstance(c[0], RtcpRrPacket) for c in peer.rtcp)  # the leg always sends: SR only
    # The peer answers with a receiver report on the leg's source: the leg learns the round trip.
    answer = RtcpRrPacket(
        peer.ssrc, [RtcpReportBlock(report.ssrc, lsr=ntp_middle32(report.sender_info.ntp_timestamp))]
    )
    assert peer.session is not None
    peer.send_raw(peer.session.protect_rtcp(serialize_compound([answer])))
    reports = worker.legs[client.leg_id].reports
    await peer.wait_for(lambda: reports.rtt is not None)
    assert reports.rtt is not None and 0 <= reports.rtt < 2.0


async def test_a_peer_rekey_keeps_the_leg_outbound_srtp_and_srtcp_counting_on(
    worker: MediaWorker, open_leg: OpenLeg
) -> None:
    """A re-INVITE with a new key from the peer changes only what the leg decrypts: a fresh outbound
    context under the leg's unchanged key would send SRTCP index 0 again, a key stream reuse that the
    peer's replay check rejects."""
    client = await open_leg(worker, srtp=True)
    peer, leg = client.peer, worker.legs[client.leg_id]
    for _ in range(2):
        leg.send_rtcp()
    await peer.wait_for(lambda: len(peer.rtcp) >= 2)
    new_key = generate_key_salt()
    assert (await client.update(remote_crypto_key=format_sdes_inline(new_key))).ok
    received = len(peer.received)
    for _ in range(2):
        leg.send_rtcp()
    await peer.wait_for(lambda: len(peer.rtcp) >= 4 and len(peer.received) >= received + 5)
    assert peer.rejected == 0

    async def counts() -> tuple[int, int]:
        return STATS.srtp_failures["auth"], STATS.packets_in

    auth_failures, packets_in = await counts()
    peer.send_frame(voiced(0.02))  # still under the old key: refused
    await poll(counts, lambda now: now[0] == auth_failures + 1)
    assert client.opened is not None and peer.remote is not None
    peer.key = new_key
    peer.connect(peer.remote, client.opened.crypto_key)
    peer.send_frame(voiced(0.02))  # under the new key: taken
    await poll(counts, lambda now: now[1] == packets_in + 1)


async def test_a_reply_waits_for_the_callers_media_clock(
    bus: Bus, worker: MediaWorker, open_leg: OpenLeg
) -> None:
    client = await open_leg(worker, srtp=True)
    await client.peer.play(voiced(0.6))
    await poll(client.audio_in, lambda audio: len(audio) >= 4000)
    frames = await bus.read({bus.keys.audio_in(client.call_id): "0"}, count=1000)
    clock_ms = frames[-1].message.at_ms  # type: ignore[attr-defined]
    agent = voiced(0.4, f0=180.0, seed=3.0).astype("<i2").tobytes()

    async def reply(turn_id: str, not_before_ms: int) -> None:
        chunk = AudioChunk(
            call_id=client.call_id, turn_id=turn_id, seq=0, pcm=agent, last=True, not_before_ms=not_before_ms
        )
        await bus.publish(bus.keys.audio_out(client.call_id), chunk)

    await reply("later", clock_ms + 60_000)  # a minute of the caller's time away
    await asyncio.sleep(1.0)
    assert not [e for e in await client.events() if isinstance(e, PlaybackStarted)]
    await client.command(StopPlayback(turn_id="later"))
    await reply("due", clock_ms)  # already passed
    (started,) = await wait_events(client, PlaybackStarted)
    assert started.turn_id == "due"
