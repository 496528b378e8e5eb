from __future__ import annotations

import asyncio
import time

from activecall.bus import Bus
from activecall.registry import Heartbeat, WorkerInfo, list_workers, pick_least_loaded


def info(worker_id: str, load: int = 0, capacity: int = 10, draining: bool = False) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        role="media",
        host="h",
        pid=1,
        metrics_port=9102,
        load=load,
        capacity=capacity,
        draining=draining,
    )


async def test_heartbeat_registers_refreshes_and_removes(bus: Bus) -> None:
    load = [3]
    beat = Heartbeat(bus.redis, bus.keys, info("m-1", capacity=400), lambda: load[0], interval=0.05)
    beat.start()
    try:
        first = (await _wait_for_workers(bus, 1))[0]
        assert (first.id, first.load, first.capacity) == ("m-1", 3, 400)
        load[0] = 7
        deadline = time.monotonic() + 2
        while (await list_workers(bus.redis, bus.keys, "media", ttl=5))[0].load != 7:
            assert time.monotonic() < deadline
        assert (await list_workers(bus.redis, bus.keys, "media", ttl=5))[0].ts > first.ts
    finally:
        await beat.stop()
    assert await list_workers(bus.redis, bus.keys, "media", ttl=5, include_dead=True) == []


async def _wait_for_workers(bus: Bus, count: int) -> list[WorkerInfo]:
    deadline = time.monotonic() + 2
    while True:
        workers = await list_workers(bus.redis, bus.keys, "media", ttl=5)
        if len(workers) >= count:
            return workers
        assert time.monotonic() < deadline


async def test_dead_workers_are_hidden_then_pruned(bus: Bus) -> None:
    stale = info("old")
    stale.ts = time.time() - 10
    ancient = info("ancient")
    ancient.ts = time.time() - 10_000
    for w in (stale, ancient, info("fresh")):
        await bus.redis.hset(bus.keys.workers("media"), w.id, w.to_json())
    await bus.redis.hset(bus.keys.workers("media"), "broken", b"{not json")
    live = await list_workers(bus.redis, bus.keys, "media", ttl=5)
    assert [w.id for w in live] == ["fresh"]
    everyone = await list_workers(bus.redis, bus.keys, "media", ttl=5, include_dead=True)
    assert [w.id for w in everyone] == ["fresh", "old"]
    assert sorted(await bus.redis.hkeys(bus.keys.workers("media"))) == [b"fresh", b"old"]


def test_pick_least_loaded() -> None:
    workers = [info("a", 5, 10), info("b", 1, 10), info("c", 0, 10, draining=True), info("d", 10, 10)]
    chosen = pick_least_loaded(workers)
    assert chosen is not None and chosen.id == "b"
    assert pick_least_loaded([info("full", 10, 10), info("drain", 0, 10, draining=True)]) is None


async def test_a_workers_control_stream_expires_once_its_heartbeat_stops(bus: Bus) -> None:
    control = bus.keys.media_control("m-owned")
    await bus.redis.xadd(control, {"m": b"x"})
    beat = Heartbeat(
        bus.redis, bus.keys, info("m-owned"), lambda: 0, interval=0.05, owned=(control,), owned_ttl=0.3
    )
    await beat.beat()
    assert 0 < await bus.redis.pttl(control) <= 300
    for _ in range(8):  # beats keep it alive past its ttl
        await asyncio.sleep(0.1)
        await beat.beat()
    assert await bus.redis.exists(control)
    await asyncio.sleep(0.5)  # the worker died: no more beats
    assert not await bus.redis.exists(control)
