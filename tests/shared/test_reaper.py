"""The reaper against real Redis: a call whose edge and legs are gone is ended everywhere; a call with a
live edge, or with a live leg on a live media worker, is left alone."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from activecall.bus import Bus, as_str
from activecall.config import RedisSettings
from activecall.contract import SESSION_ROLES, CallState, Direction, EndReason, Role
from activecall.media.worker import MediaWorker
from activecall.messages import AudioFrame, CallEnded, CallStateChanged, Message, SessionStart
from activecall.reaper import CallSeen, Reaper
from activecall.registry import Heartbeat, WorkerInfo
from activecall.sessions import SessionContext, SessionWorker
from activecall.store import CallRecord, CallStore
from activecall.testing.media import LegClient, RtpPeer, loopback_config, poll

DEAD_EDGE = "edge-dead"


def reaper_settings(settings: RedisSettings, **overrides: float) -> RedisSettings:
    return dataclasses.replace(settings, **{"reaper_min_age": 0.0, **overrides})


@pytest.fixture
def reaper(bus: Bus, redis_settings: RedisSettings) -> Reaper:
    return Reaper(bus, "reaper-test", reaper_settings(redis_settings))


async def beat(bus: Bus, worker_id: str, role: str, ts: float | None = None) -> None:
    """A registry entry as a worker's heartbeat writes it, ``ts`` in the past for a dead one."""
    info = WorkerInfo(worker_id, role, "test-host", 1, 0)
    await Heartbeat(bus.redis, bus.keys, info, lambda: 1).beat()
    if ts is not None:
        info.ts = ts
        await bus.redis.hset(bus.keys.workers(role), worker_id, info.to_json())


async def answered_call(bus: Bus, call_id: str, edge: str = DEAD_EDGE, age_s: float = 60.0) -> None:
    """The keys an answered call has: its record, events, audio and the three session entries."""
    record = CallRecord(
        call_id=call_id,
        direction=Direction.INBOUND,
        state=CallState.ANSWERED,
        edge=edge,
        media_worker="media-dead",
        created=time.time() - age_s,
    )
    await CallStore(bus.redis, bus.keys).create(record)
    await bus.emit(call_id, CallStateChanged(state=CallState.ANSWERED, previous=CallState.RINGING))
    await bus.publish(bus.keys.audio_in(call_id), AudioFrame(call_id=call_id, pcm=b"\0\0" * 160))
    for role in SESSION_ROLES:
        start = SessionStart(call_id=call_id, role=role, playbook="greeting.md")
        await bus.publish(bus.keys.sessions(role), start, maxlen=0)


async def claimed_by_dead_worker(bus: Bus, role: str, call_id: str) -> None:
    """The session as a worker killed mid-call leaves it: pending in the group, a cursor, no lease."""
    stream = bus.keys.sessions(role)
    await bus.ensure_group(stream, role)
    await bus.read_group(role, f"{role}-dead", {stream: ">"}, count=100)
    await bus.redis.hset(bus.keys.cursor(role, call_id), bus.keys.events(call_id), "0-1")


async def events(bus: Bus, call_id: str) -> list[Message]:
    return [e.message for e in await bus.read({bus.keys.events(call_id): "0"}, count=10_000)]


async def record(bus: Bus, call_id: str) -> dict[str, str]:
    raw = await bus.redis.hgetall(bus.keys.call(call_id))
    return {as_str(k): as_str(v) for k, v in raw.items()}


async def active(bus: Bus) -> set[str]:
    return {as_str(m) for m in await bus.redis.smembers(bus.keys.calls_active())}


async def test_a_call_whose_edge_and_legs_are_gone_is_ended_everywhere(bus: Bus, reaper: Reaper) -> None:
    await beat(bus, DEAD_EDGE, Role.SIP_EDGE, ts=time.time() - 600)
    await answered_call(bus, "c1")
    for role in SESSION_ROLES:
        await claimed_by_dead_worker(bus, role, "c1")

    swept = await reaper.sweep()

    assert swept is not None and swept.ended == ["c1"]
    fields = await record(bus, "c1")
    assert (fields["state"], fields["end_reason"]) == (CallState.ENDED, EndReason.REAPED)
    assert float(fields["ended"]) > 0
    assert "c1" not in await active(bus)
    told = [m for m in await events(bus, "c1") if isinstance(m, CallStateChanged | CallEnded)][-2:]
    assert isinstance(told[0], CallStateChanged) and isinstance(told[1], CallEnded)
    assert (told[0].state, told[0].previous, told[0].reason) == (CallState.ENDED, "answered", "reaped")
    assert (told[1].reason, told[1].by) == (EndReason.REAPED, "reaper")
    keys = bus.keys
    for role in SESSION_ROLES:
        stream = keys.sessions(role)
        assert await bus.redis.xlen(stream) == 0
        assert (await bus.redis.xpending(stream, role))["pending"] == 0
        assert not await bus.redis.exists(keys.cursor(role, "c1"), keys.lease(role, "c1"))
    for key in (keys.call("c1"), keys.events("c1")):
        assert 0 < await bus.redis.ttl(key) <= bus.settings.ended_retention
    assert 0 < await bus.redis.ttl(keys.audio_in("c1")) <= bus.settings.ended_audio_retention
    again = await Reaper(bus, "reaper-2", reaper.settings).reap()
    assert (again.ended, again.unlisted) == ([], [])


async def test_a_session_still_held_is_told_and_ends_itself(bus: Bus, reaper: Reaper) -> None:
    """A live llm worker holds the session of a call whose edge died: it is not torn from it; it stops
    on the reaper's call.ended and cleans up as after any call."""
    seen: list[Message] = []

    async def until_call_ended(ctx: SessionContext) -> None:
        while True:
            for entry in await ctx.read([bus.keys.events(ctx.call_id)], block_ms=100):
                seen.append(entry.message)
                if isinstance(entry.message, CallEnded):
                    return

    llm = SessionWorker(bus, Role.LLM, "llm-live", until_call_ended, lease_ttl=5.0)
    await llm.start()
    try:
        await answered_call(bus, "c2")
        lease = bus.keys.lease(Role.LLM, "c2")
        await poll(lambda: bus.redis.get(lease), lambda holder: holder == b"llm-live")

        swept = await reaper.sweep()

        assert swept is not None and swept.ended == ["c2"]
        await poll(lambda: bus.redis.exists(lease), lambda held: not held)
        assert isinstance(seen[-1], CallEnded) and seen[-1].by == "reaper"
        assert await bus.redis.xlen(bus.keys.sessions(Role.LLM)) == 0
    finally:
        await llm.stop()


async def test_a_call_with_a_live_edge_is_left_alone(bus: Bus, reaper: Reaper) -> None:
    await beat(bus, "edge-live", Role.SIP_EDGE)
    await answered_call(bus, "c3", edge="edge-live", age_s=7200)

    swept = await reaper.sweep()

    assert swept is not None and swept.ended == []
    assert (await record(bus, "c3"))["state"] == CallState.ANSWERED
    assert "c3" in await active(bus)
    assert await bus.redis.xlen(bus.keys.sessions(Role.ASR)) == 1


@pytest.fixture
async def media_worker(bus: Bus, redis_settings: RedisSettings, tmp_path: Path) -> AsyncIterator[MediaWorker]:
    worker = MediaWorker(bus, loopback_config(redis_settings, tmp_path), "media-live", host="test-host")
    await worker.start()
    yield worker
    await worker.stop()


async def test_a_call_whose_edge_died_but_whose_leg_lives_is_left_alone_until_the_leg_closes(
    bus: Bus, reaper: Reaper, media_worker: MediaWorker
) -> None:
    await beat(bus, media_worker.worker_id, Role.MEDIA)
    await answered_call(bus, "c4")
    client = LegClient(bus, media_worker.worker_id, await RtpPeer().start(), call_id="c4")
    try:
        assert not (await client.open(srtp=False)).error
        assert (await client.update()).ok
        listed = bus.keys.media_legs(media_worker.worker_id)
        await poll(lambda: bus.redis.smembers(listed), lambda held: held == {b"c4"})

        left = await reaper.reap()
        assert left.ended == [] and (await record(bus, "c4"))["state"] == CallState.ANSWERED

        assert (await client.close()).ok  # the leg's end: by an edge, or by its worker (orphan_grace)
        await poll(lambda: bus.redis.smembers(listed), lambda held: not held)
        swept = await reaper.reap()
        assert swept.ended == ["c4"] and (await record(bus, "c4"))["end_reason"] == EndReason.REAPED
    finally:
        client.peer.close()


async def test_a_leg_listed_by_a_dead_media_worker_does_not_keep_a_call(bus: Bus, reaper: Reaper) -> None:
    await beat(bus, "media-dead", Role.MEDIA, ts=time.time() - 600)
    await bus.redis.sadd(bus.keys.media_legs("media-dead"), "c5")  # written before it died
    await answered_call(bus, "c5")
    assert (await reaper.reap()).ended == ["c5"]


async def test_young_and_unclaimed_records_wait_for_their_age(
    bus: Bus, redis_settings: RedisSettings
) -> None:
    settings = reaper_settings(redis_settings, reaper_min_age=30.0, reaper_unclaimed_age=600.0)
    reaper = Reaper(bus, "reaper-test", settings)
    await answered_call(bus, "young", age_s=5)  # its edge may not have beaten yet
    store = CallStore(bus.redis, bus.keys)
    for call_id, age in (("queued-new", 60.0), ("queued-old", 3600.0)):
        queued = CallRecord(
            call_id=call_id, direction=Direction.OUTBOUND, state=CallState.QUEUED, created=time.time() - age
        )
        await store.create(queued)

    swept = await reaper.reap()

    assert swept.ended == ["queued-old"]
    assert await active(bus) == {"young", "queued-new"}


async def test_ids_without_a_live_record_are_only_taken_out_of_calls_active(bus: Bus, reaper: Reaper) -> None:
    store = CallStore(bus.redis, bus.keys)
    await answered_call(bus, "ended")
    await store.update("ended", state=CallState.ENDED, end_reason="remote hangup")
    await bus.redis.sadd(bus.keys.calls_active(), "no-record")

    swept = await reaper.reap()

    assert (swept.ended, sorted(swept.unlisted)) == ([], ["ended", "no-record"])
    assert await active(bus) == set()
    assert (await record(bus, "ended"))["end_reason"] == "remote hangup"
    assert not await bus.redis.exists(bus.keys.call("no-record"))


async def test_a_record_changed_since_the_sweep_read_it_is_left_alone(bus: Bus, reaper: Reaper) -> None:
    """Between the sweep's read and the end, a live edge adopted the call: the transaction does not run."""
    await answered_call(bus, "c6")
    seen = CallSeen("c6", CallState.ANSWERED, DEAD_EDGE, time.time() - 60)
    await CallStore(bus.redis, bus.keys).update("c6", edge="edge-adopting")
    assert not await reaper._end(seen)
    assert (await record(bus, "c6"))["state"] == CallState.ANSWERED


async def test_one_sweep_an_interval_across_processes(bus: Bus, redis_settings: RedisSettings) -> None:
    settings = reaper_settings(redis_settings, reaper_interval=30.0)
    first, second = Reaper(bus, "edge-a", settings), Reaper(bus, "media-b", settings)
    assert await first.sweep() is not None
    assert await second.sweep() is None
    assert await first.sweep() is None
    assert await bus.redis.get(bus.keys.reaper_lock()) == b"edge-a"


async def test_a_started_reaper_sweeps_by_itself(bus: Bus, redis_settings: RedisSettings) -> None:
    reaper = Reaper(bus, "reaper-loop", reaper_settings(redis_settings, reaper_interval=0.2))
    await answered_call(bus, "c7")
    reaper.start()
    try:
        await poll(lambda: record(bus, "c7"), lambda fields: fields["state"] == CallState.ENDED)
    finally:
        await reaper.stop()
    assert (await record(bus, "c7"))["end_reason"] == EndReason.REAPED


async def test_an_edge_s_reaper_never_reaps_its_own_calls(bus: Bus, redis_settings: RedisSettings) -> None:
    """It runs in the edge, so the edge lives, even before its first heartbeat is written."""
    await answered_call(bus, "c8", edge="edge-sweeping")
    assert (await Reaper(bus, "edge-sweeping", reaper_settings(redis_settings)).reap()).ended == []
    assert (await Reaper(bus, "media-other", reaper_settings(redis_settings)).reap()).ended == ["c8"]
