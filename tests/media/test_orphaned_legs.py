"""Legs nobody closes are closed by their worker: an unanswered media timeout, a call that ended
without its leg.close, a silent leg whose edge is gone. Real sockets, real Redis, a real worker."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

from prometheus_client import REGISTRY

from activecall.bus import Bus, as_str
from activecall.config import Config
from activecall.contract import CallState, Direction, EndReason, Role
from activecall.media.orphans import LegWatch
from activecall.media.rtcp import RtcpByePacket
from activecall.media.worker import MediaWorker
from activecall.messages import CallError, LegOpen, LegOpened, MediaTimeout, Message
from activecall.registry import Heartbeat, WorkerInfo
from activecall.store import CallRecord, CallStore
from activecall.testing.media import LegClient, poll, voiced

OpenLeg = Callable[..., Awaitable[LegClient]]
StartWorker = Callable[..., Awaitable[MediaWorker]]


def orphaned_count(reason: str) -> float:
    return REGISTRY.get_sample_value("activecall_media_legs_orphaned_total", {"reason": reason}) or 0.0


async def events_with(client: LegClient, kind: type[Message]) -> list[Message]:
    events = await poll(client.events, lambda events: any(isinstance(e, kind) for e in events))
    return [e for e in events if isinstance(e, kind)]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def held_calls(bus: Bus, worker: MediaWorker) -> set[str]:
    return {as_str(m) for m in await bus.redis.smembers(bus.keys.media_legs(worker.worker_id))}


async def answered_call(bus: Bus, call_id: str, edge: str) -> CallStore:
    store = CallStore(bus.redis, bus.keys)
    await store.create(
        CallRecord(call_id=call_id, direction=Direction.INBOUND, state=CallState.ANSWERED, edge=edge)
    )
    return store


def edge_heartbeat(bus: Bus, edge: str) -> Heartbeat:
    return Heartbeat(bus.redis, bus.keys, WorkerInfo(edge, Role.SIP_EDGE, "test-host", 1, 0), lambda: 1, 0.2)


async def test_a_leg_whose_media_timeout_no_edge_answers_is_closed_by_its_worker(
    bus: Bus, start_worker: StartWorker, media_config: Config, open_leg: OpenLeg
) -> None:
    media_config.media.rtp_timeout = 0.3
    media_config.media.orphan_grace = 0.3
    worker = await start_worker(media_config)
    before = orphaned_count("media_timeout")
    client = await open_leg(worker, srtp=True)
    assert client.opened is not None
    port = client.opened.port
    talking = asyncio.create_task(client.peer.play(voiced(30.0)))  # no timeout before it is listed
    try:
        await poll(lambda: held_calls(bus, worker), lambda held: client.call_id in held)
    finally:
        talking.cancel()
    await events_with(client, MediaTimeout)  # the caller went silent

    (error,) = await events_with(client, CallError)  # nobody answers the timeout
    assert isinstance(error, CallError) and error.source == "media"
    assert error.error.startswith(f"{EndReason.MEDIA_ORPHANED}: leg {client.leg_id} closed")
    assert client.leg_id not in worker.legs and worker.load == 0
    # It said goodbye, and its sockets are closed: it sends nothing more and its ports are free.
    await client.peer.wait_for(lambda: any(isinstance(p, RtcpByePacket) for c in client.peer.rtcp for p in c))
    assert port_is_free(port) and port_is_free(port + 1)
    assert orphaned_count("media_timeout") == before + 1
    # The reaper no longer sees a live leg of the call here.
    await poll(lambda: held_calls(bus, worker), lambda held: client.call_id not in held)
    # A leg.close from an edge coming late is answered as for any leg already closed.
    assert (await client.close()).ok


async def test_an_update_after_the_media_timeout_keeps_the_leg(
    start_worker: StartWorker, media_config: Config, open_leg: OpenLeg
) -> None:
    media_config.media.rtp_timeout = 0.3
    media_config.media.orphan_grace = 60.0  # no close while the test looks
    worker = await start_worker(media_config)
    client = await open_leg(worker, srtp=False)
    client.peer.send_frame(voiced(0.02))
    await events_with(client, MediaTimeout)
    (leg,) = worker.legs.values()
    far = time.monotonic() + 3600
    assert leg.orphaned(far)
    assert (await client.update()).ok  # an edge answered: a re-INVITE moved or held the call
    assert not leg.orphaned(far)


async def test_media_coming_back_ends_the_orphan_grace(
    start_worker: StartWorker, media_config: Config, open_leg: OpenLeg
) -> None:
    media_config.media.rtp_timeout = 0.3
    media_config.media.orphan_grace = 60.0
    worker = await start_worker(media_config)
    client = await open_leg(worker, srtp=False)
    client.peer.send_frame(voiced(0.02))
    await events_with(client, MediaTimeout)
    (leg,) = worker.legs.values()
    assert leg.orphan_due is not None

    async def orphan_due() -> float | None:
        return leg.orphan_due

    await client.peer.play(voiced(0.4))
    await poll(orphan_due, lambda due: due is None)
    assert worker.legs == {client.leg_id: leg}


async def test_a_leg_whose_call_ended_without_its_close_is_closed(
    bus: Bus, start_worker: StartWorker, media_config: Config, open_leg: OpenLeg
) -> None:
    media_config.media.orphan_grace = 0.3
    worker = await start_worker(media_config)
    before = orphaned_count("call_ended")
    client = await open_leg(worker, srtp=False)
    store = await answered_call(bus, client.call_id, "edge-1")
    await store.finish(client.call_id, EndReason.REMOTE_HANGUP)  # and its leg.close went astray

    (error,) = await events_with(client, CallError)
    assert isinstance(error, CallError) and "its call ended" in error.error
    assert error.error.startswith(EndReason.MEDIA_ORPHANED)
    assert worker.load == 0 and orphaned_count("call_ended") == before + 1


async def test_a_silent_leg_whose_edge_is_gone_is_closed_and_one_whose_edge_lives_is_kept(
    bus: Bus, start_worker: StartWorker, media_config: Config, open_leg: OpenLeg
) -> None:
    """A call on hold (inactive) sends no RTP and reports no timeout: it is closed only when its edge
    is gone."""
    media_config.media.rtp_timeout = 0.3
    media_config.media.orphan_grace = 0.3
    worker = await start_worker(media_config)
    edge = edge_heartbeat(bus, "edge-live")
    edge.start()
    try:
        kept = await open_leg(worker, srtp=False)
        assert (await kept.update(direction="inactive")).ok
        await answered_call(bus, kept.call_id, "edge-live")
        before = orphaned_count("no_edge")
        gone = await open_leg(worker, srtp=False)
        assert (await gone.update(direction="inactive")).ok
        await answered_call(bus, gone.call_id, "edge-gone")

        (error,) = await events_with(gone, CallError)
        assert isinstance(error, CallError) and "its edge 'edge-gone' is gone" in error.error
        assert orphaned_count("no_edge") == before + 1
        assert [leg.call_id for leg in worker.legs.values()] == [kept.call_id]
        assert not any(isinstance(e, (CallError, MediaTimeout)) for e in await kept.events())
        # The check that closed the other keeps this one, however long it has been silent.
        watch = LegWatch(bus, media_config, worker.worker_id)
        assert await watch.orphans(list(worker.legs.values()), time.monotonic() + 3600) == []
    finally:
        await edge.stop()


async def test_a_missing_record_closes_no_leg(bus: Bus, media_config: Config, worker: MediaWorker) -> None:
    """Redis may have restarted empty under live calls: no record is no reason to close a leg."""
    control = bus.keys.media_control(worker.worker_id)
    opened = await bus.request(control, LegOpen(call_id="no-record", leg_id="l1", srtp=False), wait_s=2)
    assert isinstance(opened, LegOpened) and not opened.error
    watch = LegWatch(bus, media_config, worker.worker_id)
    assert await watch.orphans(list(worker.legs.values()), time.monotonic() + 3600) == []


async def test_the_worker_lists_the_calls_it_holds_until_it_stops(
    bus: Bus, media_config: Config, open_leg: OpenLeg
) -> None:
    worker = MediaWorker(bus, media_config, "media-listed", host="test-host")
    await worker.start()
    try:
        client = await open_leg(worker, srtp=False)
        await poll(lambda: held_calls(bus, worker), lambda held: held == {client.call_id})
        ttl_ms = await bus.redis.pttl(bus.keys.media_legs(worker.worker_id))
        assert 0 < ttl_ms <= media_config.redis.heartbeat_ttl * 1000
    finally:
        await worker.stop()
    assert not await bus.redis.exists(bus.keys.media_legs(worker.worker_id))
