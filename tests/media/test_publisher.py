"""The worker's bus writer: one write per tick, the envelope of the bus, and Redis going away."""

from __future__ import annotations

import asyncio

import hiredis
import pytest

from activecall.bus import FIELD, Bus
from activecall.config import RedisSettings
from activecall.media.metrics import STATS
from activecall.media.publisher import AudioCommand, BusWriter
from activecall.messages import AudioFrame, BargeIn, decode
from activecall.testing.redis_server import RedisServer


async def written(writer: BusWriter) -> None:
    writer.flush()
    async with asyncio.timeout(2):
        while writer.pending or (writer._task is not None and not writer._task.done()):
            await asyncio.sleep(0.01)
            writer.flush()


async def test_frames_and_events_land_on_their_streams_capped(bus: Bus) -> None:
    bus.settings.audio_maxlen = 100
    writer = BusWriter(bus)
    for seq in range(300):
        writer.frame("c1", bytes(320), 8000, seq, seq * 20)
    writer.event("c1", BargeIn(turn_id="t1", played_ms=740))
    await written(writer)
    frames = await bus.read({bus.keys.audio_in("c1"): "0"}, count=1000)
    assert 100 <= len(frames) < 300  # MAXLEN ~ trims whole nodes
    last = frames[-1].message
    assert isinstance(last, AudioFrame) and (last.call_id, last.seq, last.at_ms, last.pcm) == (
        "c1",
        299,
        5980,
        bytes(320),
    )
    (event,) = await bus.read({bus.keys.events("c1"): "0"})
    assert event.message == BargeIn(call_id="c1", ts=event.message.ts, turn_id="t1", played_ms=740)
    assert writer.written == 301
    for value in ("a", "b", "c"):  # the pooled connection answers again (replies are back on)
        await bus.redis.set("after-write", value)
        assert await bus.redis.get("after-write") == value.encode()


async def test_audio_can_be_left_out(bus: Bus) -> None:
    writer = BusWriter(bus, publish_audio=False)
    writer.frame("c2", bytes(320), 8000, 0, 0)
    assert writer.pending == 0


async def test_items_wait_while_redis_is_away_and_leave_when_it_is_back() -> None:
    server = RedisServer().start()
    revived = RedisServer(port=server.port)
    bus = Bus.from_settings(RedisSettings(url=server.url))
    writer = BusWriter(bus, max_pending=50)
    try:
        server.kill()
        for seq in range(60):
            writer.frame("c3", bytes(320), 8000, seq, seq * 20)
        dropped = STATS.bus_dropped
        writer.flush()
        assert writer._task is not None
        await writer._task
        assert writer.pending == 50 and STATS.bus_dropped == dropped  # the ten oldest went as 60 were queued
        revived.start()
        writer._retry_at = 0.0
        await written(writer)
        entries = await bus.read({bus.keys.audio_in("c3"): "0"}, count=100)
        assert [e.message.seq for e in entries] == list(range(10, 60))  # type: ignore[attr-defined]
    finally:
        await bus.close()
        server.kill()
        revived.kill()


@pytest.mark.parametrize("flushes", [1, 3])
async def test_a_write_in_flight_is_not_doubled(bus: Bus, flushes: int) -> None:
    writer = BusWriter(bus)
    writer.frame("c4", bytes(320), 8000, 0, 0)
    writer.flush()
    first = writer._task
    for seq in range(1, flushes + 1):
        writer.frame("c4", bytes(320), 8000, seq, seq * 20)
        writer.flush()
        assert writer._task is first or first is not None and first.done()
    await written(writer)
    entries = await bus.read({bus.keys.audio_in("c4"): "0"}, count=100)
    assert [e.message.seq for e in entries] == list(range(flushes + 1))  # type: ignore[attr-defined]


@pytest.mark.parametrize("call_id", ["c1", "ts", "caf\u00e9-\u00a2ts"])
@pytest.mark.parametrize("size", [0, 160, 320, 960, 70_000])
def test_the_audio_command_is_the_packed_xadd_of_the_frame(call_id: str, size: int) -> None:
    stream = f"ac:call:{{{call_id}}}:audio:in"
    command = AudioCommand(stream, b"3000", call_id, 8000)
    pcm = bytes(range(256)) * (size // 256) + bytes(size % 256)
    for seq, at_ms, ts in ((0, 0, 0.5), (7, 140, 1700000000.5), (300, 6000, 1.25), (2**33, 2**40, 2.0)):
        frame = AudioFrame(call_id=call_id, ts=ts, pcm=pcm, sample_rate=8000, seq=seq, at_ms=at_ms)
        xadd = (b"XADD", stream, b"MAXLEN", b"~", b"3000", b"*", FIELD, frame.encode())
        packed = command.pack(pcm, seq, at_ms, ts)
        assert packed == hiredis.pack_command(xadd)  # type: ignore[arg-type]
        assert decode(packed[-len(frame.encode()) - 2 : -2]) == frame
