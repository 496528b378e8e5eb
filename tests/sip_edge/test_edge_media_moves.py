"""A call outlives its media worker: the edge sees the worker's heartbeat stop (or say draining),
opens a leg on another worker and re-INVITEs the caller with it. Real phones (baresip over TLS with
SRTP, SIPp), a real Redis, stand-in media workers (:class:`MediaResponder`) that can crash or drain.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sip_harness import SCENARIOS, EdgeFactory, EdgeHarness, make_certificate, poll
from test_edge_sipp import wait_event

from activecall.config import MediaSettings
from activecall.messages import CallAnswered, CallEnded, MediaMoved
from activecall.sip_edge.sip.transport.transport import Transport
from activecall.testing.baresip import BaresipPhone
from activecall.testing.media_responder import MediaResponder
from activecall.testing.redis_server import free_port
from activecall.testing.sipp import Sipp

CALLEE = "+15550004444"


@pytest.fixture
def media_settings() -> MediaSettings:
    return MediaSettings()


@pytest.fixture
async def first_worker(
    start_edge: EdgeFactory, tmp_path: Path, media_settings: MediaSettings
) -> AsyncIterator[tuple[EdgeHarness, MediaResponder]]:
    """An edge (UDP and TLS) with two stand-in workers; ``media-a`` sorts before the harness's
    ``media-test``, so at equal load it takes the first leg."""
    cert, key = make_certificate(tmp_path)
    harness = await start_edge(
        tls_port=free_port(), tls_cert_file=str(cert), tls_key_file=str(key), media=media_settings
    )
    worker = MediaResponder(harness.bus, "media-a", first_port=42000)
    await worker.start()
    yield harness, worker
    await worker.stop()


async def _call_from_baresip(harness: EdgeHarness, phone: BaresipPhone) -> str:
    port = harness.port(Transport.TLS)
    response = await asyncio.to_thread(phone.dial, f"sip:{CALLEE}@127.0.0.1:{port};transport=tls")
    assert response["ok"], response
    await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED")
    (call_id,) = [call.call_id for call in harness.edge.calls.values()]
    await wait_event(harness, call_id, CallAnswered)
    return call_id


async def _sipp_through_a_crash(
    harness: EdgeHarness, worker_a: MediaResponder, scenario: str, tmp_path: Path
) -> str:
    """SIPp plays ``scenario`` against the edge while the first worker crashes once the call's leg is
    updated; the call's id, once SIPp's script passed."""
    sipp = Sipp(SCENARIOS / scenario, tmp_path, remote=harness.target(), extra=["-s", CALLEE])
    run = asyncio.create_task(asyncio.to_thread(sipp.run))
    leg_a = await poll(lambda: next(iter(worker_a.legs.values()), None), within=10)
    await poll(lambda: leg_a.updates)
    await worker_a.crash()
    result = await run
    assert result.ok, result.describe()
    return leg_a.call_id


async def test_a_crashed_workers_call_moves_and_baresip_takes_the_new_srtp_key(
    first_worker: tuple[EdgeHarness, MediaResponder], tmp_path: Path
) -> None:
    harness, worker_a = first_worker
    worker_b = harness.responder
    phone = BaresipPhone(tmp_path / "baresip", user="caller", sip_trace=True)
    await asyncio.to_thread(phone.start)
    try:
        call_id = await _call_from_baresip(harness, phone)
        (old_leg,) = worker_a.legs.values()
        crashed_at = time.monotonic()
        await worker_a.crash()
        moved = await wait_event(harness, call_id, MediaMoved, within=15)
        noticed_s = time.monotonic() - crashed_at
        (new_leg,) = worker_b.legs.values()
        await poll(lambda: new_leg.updates)
        record = await harness.edge.store.get(call_id)
        await asyncio.to_thread(phone.hangup)
        await asyncio.to_thread(phone.wait_event, "CALL_CLOSED")
        ended = await wait_event(harness, call_id, CallEnded)
        await poll(lambda: new_leg.closed)
    finally:
        await asyncio.to_thread(phone.stop)
    print(f"\ncrash to media.moved: {noticed_s:.2f} s")
    assert (moved.from_worker, moved.to_worker, moved.reason, moved.leg_id) == (
        "media-a",
        "media-test",
        "lost",
        new_leg.leg_id,
    )
    assert new_leg.leg_id != old_leg.leg_id and new_leg.srtp and new_leg.crypto_key != old_leg.crypto_key
    assert record is not None and record.media_worker == "media-test"
    trace = phone.log_text()
    # baresip received the re-INVITE: the new worker's port and key, the same session id one version up.
    first = re.search(rf"o=- (\d+) (\d+) IN IP4[^\n]*\n(?:[^\n]*\n){{0,6}}?m=audio {old_leg.port} ", trace)
    assert first is not None, trace[-3000:]
    session_id, version = first.group(1), int(first.group(2))
    moved_sdp = rf"o=- {session_id} {version + 1} IN IP4[^\n]*\n(?:[^\n]*\n){{0,6}}?m=audio {new_leg.port} "
    assert re.search(moved_sdp + "RTP/SAVP 0 101", trace), trace[-3000:]
    assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{new_leg.crypto_key}" in trace
    assert trace.count("SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)") >= 2
    (update,) = new_leg.updates
    assert update.remote_crypto_suite == "AES_CM_128_HMAC_SHA1_80"
    assert len(base64.b64decode(update.remote_crypto_key)) == 30
    assert (ended.reason, ended.by) == ("remote hangup", "remote")


@pytest.mark.parametrize("media_settings", [MediaSettings(failover_new_key=False)])
async def test_the_moved_leg_may_keep_the_srtp_key_for_peers_that_cannot_rekey(
    first_worker: tuple[EdgeHarness, MediaResponder], tmp_path: Path
) -> None:
    harness, worker_a = first_worker
    phone = BaresipPhone(tmp_path / "baresip", user="caller", sip_trace=True)
    await asyncio.to_thread(phone.start)
    try:
        call_id = await _call_from_baresip(harness, phone)
        (old_leg,) = worker_a.legs.values()
        await worker_a.crash()
        await wait_event(harness, call_id, MediaMoved, within=15)
        (new_leg,) = harness.responder.legs.values()
        await poll(lambda: new_leg.updates)
    finally:
        await asyncio.to_thread(phone.stop)
    trace = phone.log_text()
    assert new_leg.crypto_key == old_leg.crypto_key and new_leg.port != old_leg.port
    moved_offer = rf"m=audio {new_leg.port} RTP/SAVP 0 101[^\n]*\n(?:[^\n]*\n){{0,8}}?a=crypto:1 "
    assert re.search(moved_offer + rf"AES_CM_128_HMAC_SHA1_80 inline:{re.escape(old_leg.crypto_key)}", trace)


async def test_a_draining_workers_call_moves_and_its_old_leg_is_closed(
    first_worker: tuple[EdgeHarness, MediaResponder], tmp_path: Path
) -> None:
    harness, worker_a = first_worker
    worker_b = harness.responder
    phone = BaresipPhone(tmp_path / "baresip", user="caller", sip_trace=True)
    await asyncio.to_thread(phone.start)
    try:
        call_id = await _call_from_baresip(harness, phone)
        (old_leg,) = worker_a.legs.values()
        await worker_a.drain()
        moved = await wait_event(harness, call_id, MediaMoved, within=15)
        await poll(lambda: old_leg.closed)
        (new_leg,) = worker_b.legs.values()
        assert not phone.events or all(e.get("type") != "CALL_CLOSED" for e in phone.events)
        await asyncio.to_thread(phone.hangup)
        await asyncio.to_thread(phone.wait_event, "CALL_CLOSED")
        ended = await wait_event(harness, call_id, CallEnded)
    finally:
        await asyncio.to_thread(phone.stop)
    assert (moved.from_worker, moved.to_worker, moved.reason) == ("media-a", "media-test", "draining")
    assert f"inline:{new_leg.crypto_key}" in phone.log_text()
    assert (ended.reason, ended.by) == ("remote hangup", "remote")


@pytest.mark.parametrize(
    "scenario",
    [
        "uac_reinvite.xml",
        # RFC 3311: a peer whose Allow lists UPDATE gets the offer in an UPDATE (the script waits for
        # UPDATE, not INVITE); its 200 carries the answer and no ACK follows.
        "uac_update.xml",
    ],
)
async def test_sipp_answers_the_new_offer_and_the_call_goes_on(
    first_worker: tuple[EdgeHarness, MediaResponder], tmp_path: Path, scenario: str
) -> None:
    harness, worker_a = first_worker
    call_id = await _sipp_through_a_crash(harness, worker_a, scenario, tmp_path)
    moved = await wait_event(harness, call_id, MediaMoved)
    ended = await wait_event(harness, call_id, CallEnded)
    (new_leg,) = harness.responder.legs.values()
    (update,) = new_leg.updates
    assert (moved.reason, moved.to_worker) == ("lost", "media-test")
    # SIPp's answer moved its own media too: the new leg sends there.
    assert (update.remote_address, update.remote_port, update.codec) == ("127.0.0.1", 6100, "PCMU")
    assert (ended.reason, ended.by) == ("remote hangup", "remote")


async def test_a_reinvite_answered_491_is_sent_again_and_the_call_moves(
    first_worker: tuple[EdgeHarness, MediaResponder], tmp_path: Path
) -> None:
    harness, worker_a = first_worker
    call_id = await _sipp_through_a_crash(harness, worker_a, "uac_reinvite_491.xml", tmp_path)
    moved = await wait_event(harness, call_id, MediaMoved)
    ended = await wait_event(harness, call_id, CallEnded)
    (new_leg,) = harness.responder.legs.values()
    assert moved.leg_id == new_leg.leg_id and len(new_leg.updates) == 1
    assert (ended.reason, ended.by) == ("remote hangup", "remote")


async def test_a_refused_reinvite_ends_the_call_with_bye_and_says_why(
    first_worker: tuple[EdgeHarness, MediaResponder], tmp_path: Path
) -> None:
    harness, worker_a = first_worker
    call_id = await _sipp_through_a_crash(harness, worker_a, "uac_reinvite_488.xml", tmp_path)
    ended = await wait_event(harness, call_id, CallEnded)
    (new_leg,) = harness.responder.legs.values()
    await harness.responder.wait_for(lambda: new_leg.closed)
    assert ended.by == "media"
    assert ended.reason == "media worker lost: re-INVITE answered 488 Not Acceptable Here"
    assert not new_leg.updates
