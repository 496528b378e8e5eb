from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from prometheus_client import REGISTRY

from activecall.bus import Bus, with_reconnect
from activecall.config import RedisSettings
from activecall.leases import LeaseKeeper
from activecall.messages import CallEnded, Probe, SessionStart
from activecall.registry import WorkerInfo
from activecall.sessions import SessionContext, SessionWorker
from activecall.testing.probe_worker import make_handler
from activecall.testing.redis_server import RedisServer


def probe_in(bus: Bus, call_id: str) -> str:
    return bus.keys.call_stream(call_id, "probe:in")


def probe_out(bus: Bus, call_id: str) -> str:
    return bus.keys.call_stream(call_id, "probe:out")


async def start_session(bus: Bus, call_id: str, role: str = "probe") -> None:
    await bus.publish(bus.keys.sessions(role), SessionStart(call_id=call_id, role=role), maxlen=0)


async def outputs(bus: Bus, call_id: str) -> list[Probe]:
    entries = await bus.read({probe_out(bus, call_id): "0"}, count=100_000)
    return [e.message for e in entries if isinstance(e.message, Probe)]


def spawn_probe_worker(settings: RedisSettings, worker_id: str, delay: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": settings.url}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "activecall.testing.probe_worker",
            "--redis-url",
            settings.url,
            "--prefix",
            settings.prefix,
            "--worker-id",
            worker_id,
            "--lease-ttl",
            str(settings.lease_ttl),
            "--delay",
            str(delay),
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )


async def wait_until(predicate, limit_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit_s
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_killed_worker_s_session_is_taken_over_from_its_cursor(redis_settings: RedisSettings) -> None:
    """SIGKILL the owning worker mid-stream: the other worker takes over after the lease expires,
    resumes from the saved cursor, and no message is lost."""
    settings = RedisSettings(url=redis_settings.url, prefix=redis_settings.prefix, lease_ttl=1.0)
    bus = Bus.from_settings(settings)
    workers = {name: spawn_probe_worker(settings, name, delay=0.01) for name in ("w-a", "w-b")}
    try:
        await asyncio.sleep(0.8)  # both workers have joined the group
        total = 300
        await start_session(bus, "call-1")
        await bus.publish_many([(probe_in(bus, "call-1"), Probe(seq=i)) for i in range(total)], maxlen=0)
        await bus.publish(probe_in(bus, "call-1"), CallEnded(reason="test"), maxlen=0)

        async def some_done() -> bool:
            return len(await outputs(bus, "call-1")) >= 60

        await wait_until(some_done, 20, "the first worker to make progress")
        owner = (await outputs(bus, "call-1"))[0].worker
        killed_at = time.monotonic()
        workers[owner].send_signal(signal.SIGKILL)
        workers[owner].wait()
        survivor = "w-b" if owner == "w-a" else "w-a"

        async def survivor_done() -> bool:
            done = await outputs(bus, "call-1")
            return any(p.worker == survivor and p.seq == total - 1 for p in done)

        await wait_until(survivor_done, 30, "the survivor to finish the stream")
        done = await outputs(bus, "call-1")
        by_owner = [p.seq for p in done if p.worker == owner]
        by_survivor = [p.seq for p in done if p.worker == survivor]
        assert {p.seq for p in done} == set(range(total)), "a message was lost"
        assert by_survivor, "the survivor never took over"
        # Resumed from the cursor, not from the start: at most the one in-flight message is repeated.
        assert by_survivor[0] >= by_owner[-1]
        assert by_survivor[0] <= by_owner[-1] + 1
        assert by_survivor == list(range(by_survivor[0], total))
        assert time.monotonic() - killed_at >= 0.5  # not before the lease could expire

        async def session_acked() -> bool:
            return not (await bus.redis.xpending(bus.keys.sessions("probe"), "probe"))["pending"]

        await wait_until(session_acked, 5, "the session entry to be acknowledged")
        assert not await bus.redis.exists(
            bus.keys.lease("probe", "call-1"), bus.keys.cursor("probe", "call-1")
        )
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        await bus.close()


def counter(name: str, role: str) -> float:
    return REGISTRY.get_sample_value(name, {"role": role}) or 0.0


async def test_sessions_are_spread_and_capacity_is_respected(bus: Bus) -> None:
    release = asyncio.Event()
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def handler(name: str):  # type: ignore[no-untyped-def]
        async def handle(ctx: SessionContext) -> None:
            seen[name].append(ctx.call_id)
            await release.wait()

        return handle

    a = SessionWorker(bus, "cap", "a", handler("a"), capacity=2)
    b = SessionWorker(bus, "cap", "b", handler("b"), capacity=2)
    await a.start()
    await b.start()
    try:
        for i in range(5):
            await start_session(bus, f"c{i}", role="cap")

        async def four_running() -> bool:
            return a.load + b.load == 4

        await wait_until(four_running, 5, "four sessions to run")
        await asyncio.sleep(0.3)
        assert (a.load, b.load) == (2, 2)  # the fifth waits for room
        release.set()

        async def all_done() -> bool:
            return len(seen["a"]) + len(seen["b"]) == 5 and a.load + b.load == 0

        await wait_until(all_done, 5, "every session to finish")
        assert sorted(seen["a"] + seen["b"]) == [f"c{i}" for i in range(5)]
    finally:
        await a.stop()
        await b.stop()


async def test_a_lost_lease_stops_the_session(bus: Bus) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handle(ctx: SessionContext) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    lost_before = counter("activecall_sessions_lost_total", "lease")
    worker = SessionWorker(bus, "lease", "w", handle, lease_ttl=0.6)
    await worker.start()
    try:
        await start_session(bus, "c-lost", role="lease")
        await asyncio.wait_for(started.wait(), 5)
        await bus.redis.set(bus.keys.lease("lease", "c-lost"), "someone-else")
        await asyncio.wait_for(cancelled.wait(), 5)
        assert counter("activecall_sessions_lost_total", "lease") == lost_before + 1
        assert worker.load == 0
    finally:
        await worker.stop()


async def test_drain_finishes_held_sessions_and_takes_no_new_one(bus: Bus) -> None:
    finish = asyncio.Event()
    handled: list[str] = []

    async def handle(ctx: SessionContext) -> None:
        handled.append(ctx.call_id)
        await finish.wait()

    worker = SessionWorker(bus, "drain", "w", handle)
    await worker.start()
    try:
        await start_session(bus, "held", role="drain")

        async def holding() -> bool:
            return worker.load == 1

        await wait_until(holding, 5, "the session to start")
        draining = asyncio.create_task(worker.drain())
        await start_session(bus, "late", role="drain")
        await asyncio.sleep(0.7)
        assert handled == ["held"] and not draining.done()
        finish.set()
        await asyncio.wait_for(draining, 5)
        assert handled == ["held"]
    finally:
        await worker.stop()


async def test_a_failing_handler_reports_the_error_and_ends_the_session(bus: Bus) -> None:
    async def handle(ctx: SessionContext) -> None:
        raise RuntimeError("engine exploded")

    worker = SessionWorker(bus, "fail", "w", handle)
    await worker.start()
    try:
        await start_session(bus, "c-fail", role="fail")

        async def error_emitted() -> bool:
            return bool(await bus.read({bus.keys.events("c-fail"): "0"}))

        await wait_until(error_emitted, 5, "the error event")
        (entry,) = await bus.read({bus.keys.events("c-fail"): "0"})
        assert entry.message.TYPE == "call.error" and "engine exploded" in entry.message.error  # type: ignore[attr-defined]
    finally:
        await worker.stop()


async def test_notes_and_cursor_survive_a_takeover(bus: Bus) -> None:
    source = probe_in(bus, "c-notes")
    seen_by_b: list[tuple[dict[str, str], list[int]]] = []
    a_saved = asyncio.Event()

    async def handle_a(ctx: SessionContext) -> None:
        entries = await ctx.read([source], count=2, block_ms=1000)
        for entry in entries:
            ctx.processed(entry)
        ctx.notes["utterance"] = "7"
        await ctx.save()
        a_saved.set()
        await asyncio.sleep(60)  # "dies" holding the session

    async def handle_b(ctx: SessionContext) -> None:
        entries = await ctx.read([source], count=10, block_ms=1000)
        seen_by_b.append((dict(ctx.notes), [e.message.seq for e in entries]))  # type: ignore[attr-defined]

    await bus.publish_many([(source, Probe(seq=i)) for i in range(5)], maxlen=0)
    a = SessionWorker(bus, "notes", "a", handle_a, lease_ttl=0.5)
    await a.start()
    await start_session(bus, "c-notes", role="notes")
    await asyncio.wait_for(a_saved.wait(), 5)
    await a.stop()  # its lease is left to expire, as after a crash
    b = SessionWorker(bus, "notes", "b", handle_b, lease_ttl=0.5)
    await b.start()
    try:

        async def b_ran() -> bool:
            return bool(seen_by_b)

        await wait_until(b_ran, 10, "worker b to take the session over")
        assert seen_by_b == [({"utterance": "7"}, [2, 3, 4])]
    finally:
        await b.stop()


async def register(bus: Bus, role: str, worker_id: str, draining: bool = False) -> None:
    info = WorkerInfo(id=worker_id, role=role, host="test", pid=0, metrics_port=0, draining=draining)
    await bus.redis.hset(bus.keys.workers(role), worker_id, info.to_json())


async def test_a_draining_worker_hands_its_sessions_to_a_live_one(bus: Bus) -> None:
    source = probe_in(bus, "c-handover")
    a_saved = asyncio.Event()
    seen_by_b: list[tuple[bool, dict[str, str], list[int]]] = []

    async def handle_a(ctx: SessionContext) -> None:
        entries = await ctx.read([source], count=2, block_ms=1000)
        for entry in entries:
            ctx.processed(entry)
        ctx.notes["turn"] = "3"
        await ctx.save()
        a_saved.set()
        await asyncio.sleep(60)  # the call goes on past the drain

    async def handle_b(ctx: SessionContext) -> None:
        entries = await ctx.read([source], count=10, block_ms=1000)
        seen = [e.message.seq for e in entries]  # type: ignore[attr-defined]
        seen_by_b.append((ctx.session.taken_over, dict(ctx.notes), seen))
        await asyncio.sleep(60)

    await bus.publish_many([(source, Probe(seq=i)) for i in range(5)], maxlen=0)
    # A lease far longer than the test: only a handover, not an expiry, can move the session.
    a = SessionWorker(bus, "handover", "a", handle_a, lease_ttl=60)
    b = SessionWorker(bus, "handover", "b", handle_b, lease_ttl=60)
    await register(bus, "handover", "a", draining=True)
    await a.start()
    try:
        await start_session(bus, "c-handover", role="handover")
        await asyncio.wait_for(a_saved.wait(), 5)
        await b.start()
        await register(bus, "handover", "b")
        handed_before = counter("activecall_sessions_handed_over_total", "handover")
        await asyncio.wait_for(a.drain(), 5)

        async def b_ran() -> bool:
            return bool(seen_by_b)

        await wait_until(b_ran, 5, "worker b to resume the handed-over session")
        assert seen_by_b == [(True, {"turn": "3"}, [2, 3, 4])]
        assert a.load == 0 and b.load == 1
        assert await bus.redis.get(bus.keys.lease("handover", "c-handover")) == b"b"
        assert counter("activecall_sessions_handed_over_total", "handover") == handed_before + 1
        pending = await bus.redis.xpending(bus.keys.sessions("handover"), "handover")
        assert pending["pending"] == 1 and await bus.redis.xlen(bus.keys.sessions("handover")) == 1
    finally:
        await a.stop()
        await b.stop()


async def test_a_draining_worker_alone_keeps_its_sessions(bus: Bus) -> None:
    finish = asyncio.Event()

    async def handle(ctx: SessionContext) -> None:
        await finish.wait()

    worker = SessionWorker(bus, "alone", "a", handle, lease_ttl=60)
    await register(bus, "alone", "a", draining=True)
    await register(bus, "alone", "other-draining", draining=True)
    await worker.start()
    try:
        await start_session(bus, "c-alone", role="alone")

        async def holding() -> bool:
            return worker.load == 1

        await wait_until(holding, 5, "the session to start")
        draining = asyncio.create_task(worker.drain())
        await asyncio.sleep(0.5)
        assert not draining.done() and worker.load == 1
        finish.set()
        await asyncio.wait_for(draining, 5)
        assert await bus.redis.xlen(bus.keys.sessions("alone")) == 0
    finally:
        await worker.stop()


async def test_a_stalled_event_loop_keeps_its_leases_and_a_stuck_one_loses_them(bus: Bus) -> None:
    """The loop blocks (as under an engine call holding it, or a starved CPU) for three lease TTLs: the
    lease keeper's thread still renews, and a second worker takes nothing. A loop that stops running
    for good stops its keeper's renewals past the stall limit, and the second worker takes the
    session over."""
    started: list[str] = []

    async def handle(ctx: SessionContext) -> None:
        started.append(ctx.worker_id)
        await asyncio.sleep(60)

    ttl = 0.5
    a = SessionWorker(bus, "stall", "a", handle, lease_ttl=ttl)
    await a.start()
    await start_session(bus, "c-stall", role="stall")

    async def a_started() -> bool:
        return started == ["a"]

    await wait_until(a_started, 5, "worker a to claim the session")
    b = SessionWorker(bus, "stall", "b", handle, lease_ttl=ttl)
    await b.start()
    try:
        time.sleep(3 * ttl)  # noqa: ASYNC251  the stall itself
        await asyncio.sleep(2 * ttl)  # b's takeover loop gets its chance
        assert started == ["a"]
        assert await bus.redis.get(bus.keys.lease("stall", "c-stall")) == b"a"
        # Stuck for good from here: a's loop no longer ticks its keeper, and claims nothing. (Blocking
        # the loop would stop b as well: both run on this one.)
        a.leases.tick = lambda: None  # type: ignore[method-assign]
        a.draining = True
        await asyncio.sleep(a.leases.stall_limit)
        await wait_until(lambda: _true_if(started == ["a", "b"]), 15, "worker b to take the session over")
        assert await bus.redis.get(bus.keys.lease("stall", "c-stall")) == b"b"
    finally:
        await a.stop()
        await b.stop()


async def _true_if(value: bool) -> bool:
    return value


async def test_a_lapsed_lease_is_taken_again_unless_another_worker_holds_it(bus: Bus) -> None:
    """A lease key gone with nobody holding it (Redis came back from its append-only file with the
    key expired, or the keeper could not run for a TTL) is taken again; one that another worker took
    is reported lost."""
    keeper = LeaseKeeper(bus.settings, bus.keys, "lapse", "w", 5.0, 25.0, lambda call_id: None)
    lease = bus.keys.lease("lapse", "c-lapse")
    await bus.ensure_group(bus.keys.sessions("lapse"), "lapse")
    try:
        keeper.hold("c-lapse", "0-1")
        assert keeper.renew_once() == []
        assert await bus.redis.get(lease) == b"w"
        await bus.redis.delete(lease)
        assert keeper.renew_once() == []
        assert await bus.redis.get(lease) == b"w"
        await bus.redis.set(lease, "other")
        assert keeper.renew_once() == ["c-lapse"], "another worker's lease was taken"
        assert await bus.redis.get(lease) == b"other"
    finally:
        keeper.stop()


async def test_a_session_goes_on_through_a_redis_restart_from_its_append_only_file() -> None:
    """Redis is SIGKILLed mid-session and started again from its append-only file after four lease
    TTLs: the worker that held the session keeps it (no takeover, no error, no second worker), its
    handler goes on from the cursor, and every message sent before and after is handled."""
    server = RedisServer(append_only=True).start()
    settings = RedisSettings(url=server.url, lease_ttl=0.5)
    bus = Bus.from_settings(settings)
    workers = [
        SessionWorker(bus, "probe", name, make_handler(bus, name, 0.01), capacity=10, lease_ttl=0.5)
        for name in ("w-a", "w-b")
    ]
    lost_before = counter("activecall_sessions_lost_total", "probe")
    try:
        for worker in workers:
            await worker.start()
        await start_session(bus, "call-r")
        await bus.publish_many([(probe_in(bus, "call-r"), Probe(seq=i)) for i in range(50)], maxlen=0)

        async def first_half_done() -> bool:
            return len({p.seq for p in await outputs(bus, "call-r")}) == 50

        await wait_until(first_half_done, 20, "the first 50 messages")
        server.kill()
        await asyncio.sleep(4 * settings.lease_ttl)
        server.start()
        await with_reconnect(
            lambda: bus.publish_many(
                [(probe_in(bus, "call-r"), Probe(seq=i)) for i in range(50, 100)], maxlen=0
            ),
            "publish",
        )

        async def all_done() -> bool:
            return len({p.seq for p in await outputs(bus, "call-r")}) == 100

        await wait_until(all_done, 30, "the second 50 messages")
        owners = {p.worker for p in await outputs(bus, "call-r")}
        assert len(owners) == 1, f"the session changed hands: {owners}"
        assert not await bus.read({bus.keys.events("call-r"): "0"}), "an error was reported"
        assert counter("activecall_sessions_lost_total", "probe") == lost_before
        assert sum(w.load for w in workers) == 1
    finally:
        for worker in workers:
            await worker.stop()
        await bus.close()
        server.stop()
