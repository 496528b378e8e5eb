"""leg.open / leg.update / leg.close over the bus against a worker started in-process."""

from __future__ import annotations

import asyncio
import base64
import gc
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

from activecall.bus import Bus
from activecall.config import Config, RedisSettings
from activecall.media.rtcp import RtcpByePacket, RtcpSdesPacket
from activecall.media.service import MediaService
from activecall.media.worker import MediaWorker
from activecall.messages import LegClose, LegOpen, LegOpened
from activecall.registry import Heartbeat, WorkerInfo, list_workers
from activecall.service import Runtime
from activecall.testing.media import LegClient, RtpPeer, loopback_config

OpenLeg = Callable[..., Awaitable[LegClient]]
StartWorker = Callable[..., Awaitable[MediaWorker]]


async def test_open_answers_with_a_port_of_the_leased_block_and_an_sdes_key(
    bus: Bus, worker: MediaWorker, media_config: Config
) -> None:
    client = LegClient(bus, worker.worker_id, await RtpPeer(srtp=True).start())
    try:
        opened = await client.open(srtp=True)
        assert (opened.leg_id, opened.worker, opened.address, opened.error) == (
            client.leg_id,
            "media-t1",
            "127.0.0.1",
            "",
        )
        (block,) = worker.lease.held
        assert block.first <= opened.port < opened.port + 1 <= block.last and opened.port % 2 == 0
        assert await bus.redis.get(f"{bus.keys.port_blocks('test-host')}:{block.index}") == b"media-t1"
        assert opened.crypto_suite == "AES_CM_128_HMAC_SHA1_80"
        assert len(base64.b64decode(opened.crypto_key, validate=True)) == 30
        assert worker.load == 1
        assert (await client.update()).ok
        assert (await client.close()).ok
        assert worker.load == 0
    finally:
        client.peer.close()


async def test_plain_rtp_leg_has_no_key_and_a_repeated_open_gets_the_same_answer(
    bus: Bus, worker: MediaWorker
) -> None:
    control = bus.keys.media_control(worker.worker_id)
    first = await bus.request(control, LegOpen(call_id="c1", leg_id="l1", srtp=False), wait_s=2)
    again = await bus.request(control, LegOpen(call_id="c1", leg_id="l1", srtp=False), wait_s=2)
    assert isinstance(first, LegOpened) and isinstance(again, LegOpened)
    assert (first.crypto_suite, first.crypto_key) == ("", "")
    assert again.port == first.port and worker.load == 1
    await bus.request(control, LegClose(call_id="c1", leg_id="l1"), wait_s=2)


async def test_update_errors_are_answered(bus: Bus, worker: MediaWorker, open_leg: OpenLeg) -> None:
    client = await open_leg(worker, srtp=True)
    bad_codec = await client.update(codec="G729", payload_type=18)
    assert (bad_codec.ok, bad_codec.error) == (False, "codec 'G729' is not supported (PCMU, PCMA)")
    no_key = await client.update(remote_crypto_key="")
    assert (no_key.ok, no_key.error) == (False, "the leg uses SRTP but the update carries no remote crypto")
    short_key = await client.update(remote_crypto_key="inline:" + base64.b64encode(b"x" * 20).decode())
    assert (short_key.ok, short_key.error) == (False, "SDES key is 20 bytes, expected 30")
    unknown = LegClient(bus, worker.worker_id, client.peer, leg_id="nope")
    answer = await unknown.update()
    assert (answer.ok, answer.error) == (False, "unknown leg")


async def test_two_workers_on_one_host_hand_out_disjoint_ports(
    bus: Bus, start_worker: StartWorker, media_config: Config, open_leg: OpenLeg
) -> None:
    first = await start_worker(media_config, "media-a")
    second = await start_worker(media_config, "media-b")
    assert {b.index for b in first.lease.held}.isdisjoint({b.index for b in second.lease.held})
    ports = {
        name: {(await open_leg(w, srtp=False)).opened.port for _ in range(4)}  # type: ignore[union-attr]
        for name, w in (("a", first), ("b", second))
    }
    assert len(ports["a"]) == len(ports["b"]) == 4 and ports["a"].isdisjoint(ports["b"])
    (block_a,) = first.lease.held
    (block_b,) = second.lease.held
    assert all(block_a.first <= p <= block_a.last for p in ports["a"])
    assert all(block_b.first <= p <= block_b.last for p in ports["b"])


async def test_capacity_and_draining_refuse_new_legs(
    bus: Bus, start_worker: StartWorker, redis_settings: RedisSettings, tmp_path: Path
) -> None:
    config = loopback_config(redis_settings, tmp_path, capacity=1)
    worker = await start_worker(config)
    control = bus.keys.media_control(worker.worker_id)
    ok = await bus.request(control, LegOpen(call_id="c1", leg_id="l1"), wait_s=2)
    full = await bus.request(control, LegOpen(call_id="c2", leg_id="l2"), wait_s=2)
    assert isinstance(ok, LegOpened) and isinstance(full, LegOpened)
    assert (ok.error, full.error, full.port) == ("", "at capacity", 0)
    drained = asyncio.create_task(worker.drain())
    refused = await bus.request(control, LegOpen(call_id="c3", leg_id="l3"), wait_s=2)
    assert isinstance(refused, LegOpened) and refused.error == "draining"
    assert not drained.done()
    await bus.request(control, LegClose(call_id="c1", leg_id="l1"), wait_s=2)
    await asyncio.wait_for(drained, 2)


async def test_close_sends_rtcp_bye_to_the_peer(worker: MediaWorker, open_leg: OpenLeg) -> None:
    client = await open_leg(worker, srtp=True)
    assert (await client.close()).ok
    await client.peer.wait_for(lambda: any(isinstance(p, RtcpByePacket) for c in client.peer.rtcp for p in c))
    bye = next(c for c in client.peer.rtcp if any(isinstance(p, RtcpByePacket) for p in c))
    assert isinstance(bye[1], RtcpSdesPacket) and bye[1].chunks[0].cname == f"media-t1/{client.leg_id}"
    assert bye[-1] == RtcpByePacket([bye[0].ssrc])  # type: ignore[union-attr]


async def test_service_runs_the_worker_under_the_runtime_heartbeat(media_config: Config, bus: Bus) -> None:
    runtime = Runtime("media", media_config, "media-svc", 0, 1.0)
    service = MediaService(runtime)
    await service.start()
    try:
        assert (service.address, service.capacity, service.load) == ("127.0.0.1", 400, 0)
        beat = Heartbeat(
            bus.redis,
            bus.keys,
            WorkerInfo("media-svc", "media", "h", 1, 0, capacity=400),
            lambda: service.load,
        )
        await beat.beat()
        (info,) = await list_workers(bus.redis, bus.keys, "media", ttl=5)
        assert (info.id, info.load, info.capacity) == ("media-svc", 0, 400)
    finally:
        await service.stop()
        await runtime.bus.close()


async def test_a_closed_leg_is_freed_without_a_collection(worker: MediaWorker, open_leg: OpenLeg) -> None:
    """The worker runs the collector seldom: a closed leg (its jitter buffer, VAD, SRTP contexts) must not
    wait in a reference cycle for a full collection."""
    gc.collect()
    gc.disable()
    try:
        client = await open_leg(worker, srtp=True)
        await client.peer.wait_for(lambda: client.peer.received)  # the leg is sending
        (leg,) = worker.legs.values()
        refs = [weakref.ref(leg), weakref.ref(leg.playout), weakref.ref(leg.jitter), weakref.ref(leg.session)]
        del leg
        assert (await client.close()).ok
        await asyncio.sleep(0.1)  # the transports finish closing on the next loop iterations
        assert [ref() for ref in refs] == [None] * len(refs)
    finally:
        gc.enable()
