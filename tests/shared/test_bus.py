from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator

import msgpack
import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from activecall.bus import (
    FIELD,
    Bus,
    BusTimeout,
    Command,
    RequestConnections,
    SharedConnection,
    pack_commands,
    with_reconnect,
)
from activecall.config import RedisSettings
from activecall.messages import Ack, LegClose, LegOpen, LegOpened, LegUpdate, Probe, SayText
from activecall.testing.media_responder import MediaResponder
from activecall.testing.redis_server import RedisServer


def skipped(reason: str) -> float:
    return REGISTRY.get_sample_value("activecall_bus_messages_skipped_total", {"reason": reason}) or 0.0


async def test_publish_and_read_in_order(bus: Bus) -> None:
    stream = bus.keys.say("c1")
    for seq in range(5):
        await bus.publish(stream, SayText(call_id="c1", turn_id="t", seq=seq, text=f"s{seq}"))
    entries = await bus.read({stream: "0"})
    assert [e.message.seq for e in entries] == [0, 1, 2, 3, 4]  # type: ignore[attr-defined]
    after = await bus.read({stream: entries[2].id})
    assert [e.message.seq for e in after] == [3, 4]  # type: ignore[attr-defined]


def test_keys_of_one_call_share_one_hash_tag(bus: Bus) -> None:
    keys = bus.keys
    tagged = [
        keys.call("abc"),
        keys.events("abc"),
        keys.audio_in("abc"),
        keys.audio_out("abc"),
        keys.say("abc"),
        keys.lease("asr", "abc"),
        keys.cursor("asr", "abc"),
        keys.history("abc"),
    ]
    # Redis Cluster hashes only the part between the first "{" and the next "}".
    assert {k[k.index("{") + 1 : k.index("}")] for k in tagged} == {"abc"}
    assert all(k.startswith(bus.settings.prefix) for k in tagged)


async def test_streams_are_capped(bus: Bus) -> None:
    stream = bus.keys.audio_in("c2")
    for seq in range(500):
        await bus.publish(stream, Probe(seq=seq), maxlen=100)
    length = await bus.redis.xlen(stream)
    assert 100 <= length < 500  # MAXLEN ~ trims whole macro nodes


async def test_uncapped_publish_keeps_everything(bus: Bus) -> None:
    stream = bus.keys.sessions("x")
    await bus.publish_many([(stream, Probe(seq=i)) for i in range(300)], maxlen=0)
    assert await bus.redis.xlen(stream) == 300


async def test_unknown_and_malformed_entries_are_counted_and_skipped(bus: Bus) -> None:
    stream = bus.keys.events("c3")
    before_unknown, before_bad = skipped("UnknownMessage"), skipped("MalformedMessage")
    await bus.publish(stream, Probe(seq=1))
    await bus.redis.xadd(stream, {FIELD: msgpack.packb({"v": 1, "type": "from.the.future", "x": 1})})
    await bus.redis.xadd(stream, {FIELD: msgpack.packb({"v": 9, "type": "probe", "seq": 2})})
    await bus.redis.xadd(stream, {FIELD: b"\xc1garbage"})
    await bus.redis.xadd(stream, {b"other": b"field"})
    await bus.publish(stream, Probe(seq=3))
    entries = await bus.read({stream: "0"})
    assert [e.message.seq for e in entries] == [1, 3]  # type: ignore[attr-defined]
    assert skipped("UnknownMessage") == before_unknown + 2
    assert skipped("MalformedMessage") == before_bad + 1
    assert skipped("MessageError") >= 1


async def test_consumer_group_create_is_idempotent_and_delivers_once(bus: Bus) -> None:
    stream = bus.keys.sessions("asr")
    await bus.ensure_group(stream, "asr")
    await bus.ensure_group(stream, "asr")  # BUSYGROUP tolerated
    await bus.publish(stream, Probe(seq=1), maxlen=0)
    first = await bus.read_group("asr", "w1", {stream: ">"}, block_ms=100)
    second = await bus.read_group("asr", "w2", {stream: ">"}, block_ms=100)
    assert [e.message.seq for e in first] == [1] and second == []  # type: ignore[attr-defined]
    pending = await bus.read_group("asr", "w1", {stream: "0"})
    assert [e.id for e in pending] == [first[0].id]
    assert await bus.ack(stream, "asr", first[0].id) == 1
    assert await bus.read_group("asr", "w1", {stream: "0"}) == []


async def test_blocking_group_read_wakes_on_publish(bus: Bus) -> None:
    stream = bus.keys.sessions("tts")
    await bus.ensure_group(stream, "tts", start_id="$")
    reader = asyncio.create_task(bus.read_group("tts", "w1", {stream: ">"}, block_ms=5000))
    await asyncio.sleep(0.05)
    await bus.publish(stream, Probe(seq=42), maxlen=0)
    entries = await asyncio.wait_for(reader, 2)
    assert [e.message.seq for e in entries] == [42]  # type: ignore[attr-defined]


async def test_autoclaim_takes_idle_entries_only(bus: Bus) -> None:
    stream = bus.keys.sessions("llm")
    await bus.ensure_group(stream, "llm")
    await bus.publish(stream, Probe(seq=1), maxlen=0)
    await bus.read_group("llm", "dead", {stream: ">"})
    _, none_yet = await bus.autoclaim(stream, "llm", "alive", min_idle_ms=10_000)
    assert none_yet == []
    await asyncio.sleep(0.06)
    _, claimed = await bus.autoclaim(stream, "llm", "alive", min_idle_ms=50)
    assert [e.message.seq for e in claimed] == [1]  # type: ignore[attr-defined]


async def test_request_reply(bus: Bus) -> None:
    control = bus.keys.media_control("m1")

    async def responder() -> None:
        (entry,) = await bus.read({control: "0"}, block_ms=2000)
        request = entry.message
        assert isinstance(request, LegOpen)
        await bus.reply(
            request.reply_to, LegOpened(leg_id=request.leg_id, worker="m1", address="127.0.0.1", port=12000)
        )

    task = asyncio.create_task(responder())
    answer = await bus.request(control, LegOpen(call_id="c", leg_id="l1"), wait_s=2)
    await task
    assert isinstance(answer, LegOpened) and (answer.leg_id, answer.port) == ("l1", 12000)


async def test_request_times_out_without_a_responder(bus: Bus) -> None:
    with pytest.raises(BusTimeout, match="no reply to leg.close"):
        await bus.request(bus.keys.media_control("nobody"), LegClose(leg_id="x"), wait_s=0.2)


async def test_operations_resume_after_redis_restarts() -> None:
    server = RedisServer().start()
    bus = Bus.from_settings(RedisSettings(url=server.url))
    try:
        stream = bus.keys.events("c9")
        await bus.publish(stream, Probe(seq=1))
        server.kill()
        restart = asyncio.get_running_loop().run_in_executor(None, _restart_later, server)
        entry_id = await asyncio.wait_for(
            with_reconnect(lambda: bus.publish(stream, Probe(seq=2)), "publish"), timeout=15
        )
        await restart
        entries = await bus.read({stream: "0"})
        assert [e.id for e in entries] == [entry_id]  # the server restarted empty: only the new entry
        assert [e.message.seq for e in entries] == [2]  # type: ignore[attr-defined]
    finally:
        await bus.close()
        server.stop()


def _restart_later(server: RedisServer) -> None:
    import time

    time.sleep(0.5)
    server.start()


def test_pack_commands_writes_what_redis_py_writes() -> None:
    from redis.asyncio.connection import Connection

    commands: list[Command] = [
        ("HSET", "call:{c1}", "caller", "Zoë", "answered", 1.5),
        ("XADD", "s", "MAXLEN", "~", 1000, "*", FIELD, b"\x00\xff"),
        ("BLPOP", "reply:1", 2.0),
        ("MULTI",),
    ]
    assert pack_commands(commands) == b"".join(Connection().pack_commands(commands))
    with pytest.raises(TypeError):
        pack_commands([("SET", "k", True)])


async def test_shared_connection_batches_from_many_tasks(bus: Bus) -> None:
    async def one(n: int) -> list[object]:
        return await bus.execute([("SET", f"shared:{n}", n), ("GET", f"shared:{n}")])

    replies = await asyncio.gather(*(one(n) for n in range(50)))
    assert replies == [[b"OK", str(n).encode()] for n in range(50)]
    transaction = await bus.execute([("MULTI",), ("INCR", "shared:t"), ("INCR", "shared:t"), ("EXEC",)])
    assert transaction[-1] == [1, 2]


async def test_shared_connection_raises_error_replies_and_keeps_going(bus: Bus) -> None:
    await bus.execute([("SET", "shared:text", "x")])
    with pytest.raises(ResponseError):
        await bus.execute([("INCR", "shared:text"), ("GET", "shared:text")])
    assert await bus.execute([("GET", "shared:text")]) == [b"x"]


async def test_shared_connection_reconnects_after_the_connection_drops(bus: Bus) -> None:
    _, client_id = await bus.execute([("SET", "shared:k", "1"), ("CLIENT", "ID")])
    await bus.redis.execute_command("CLIENT", "KILL", "ID", client_id)
    for _ in range(50):  # the reader notices the closed socket, then the next batch reconnects
        try:
            assert await bus.execute([("GET", "shared:k")]) == [b"1"]
            break
        except RedisConnectionError:
            await asyncio.sleep(0.01)
    else:
        pytest.fail("the shared connection did not come back")


async def test_execute_alone_runs_blocking_commands(bus: Bus) -> None:
    await bus.redis.rpush("shared:list", b"v")
    assert await bus.execute_alone([("BLPOP", "shared:list", 1)]) == [[b"shared:list", b"v"]]
    assert await bus.execute_alone([("BLPOP", "shared:list", 0.05)]) == [None]


@contextlib.asynccontextmanager
async def stopped(server: RedisServer) -> AsyncIterator[None]:
    """The server process stopped (SIGSTOP): its sockets stay open, and nothing answers."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


@pytest.fixture
async def own_redis() -> AsyncIterator[tuple[Bus, RedisServer]]:
    """A bus on a Redis of this test's own, which the test may stop."""
    server = RedisServer().start()
    bus = Bus.from_settings(RedisSettings(url=server.url))
    try:
        yield bus, server
    finally:
        await bus.close()
        server.stop()


async def test_shared_connection_gives_up_on_a_hung_redis_and_connects_again(
    own_redis: tuple[Bus, RedisServer],
) -> None:
    bus, server = own_redis
    shared = SharedConnection(bus.redis.connection_pool, stall_timeout=0.3)
    try:
        assert await shared.execute([("PING",)]) == [b"PONG"]
        async with stopped(server):
            started = time.monotonic()
            first = asyncio.ensure_future(shared.execute([("SET", "hung", "1")]))
            await asyncio.sleep(0.1)
            second = asyncio.ensure_future(shared.execute([("GET", "hung")]))
            results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)
            waited = time.monotonic() - started
        assert [type(result) for result in results] == [RedisTimeoutError, RedisTimeoutError]
        assert 0.3 <= waited < 2.0, waited  # the oldest batch's stall ends both, not one timer each
        assert await shared.execute([("SET", "after", "1"), ("GET", "after")]) == [b"OK", b"1"]
    finally:
        await shared.close()


async def test_a_request_connection_gives_up_on_a_hung_redis(own_redis: tuple[Bus, RedisServer]) -> None:
    bus, server = own_redis
    requests = RequestConnections(bus.redis.connection_pool, stall_timeout=0.3)
    try:
        assert await requests.execute([("PING",)]) == [b"PONG"]
        async with stopped(server):
            with pytest.raises(RedisTimeoutError):
                await asyncio.wait_for(requests.execute([("BLPOP", "reply", 0.2)], blocking_s=0.2), 5)
        assert requests._idle == []  # the stalled connection is not used again
        await bus.redis.rpush("reply", b"v")
        assert await requests.execute([("BLPOP", "reply", 1)], blocking_s=1) == [[b"reply", b"v"]]
    finally:
        await requests.close()


async def test_a_wrongly_typed_entry_is_skipped_and_counted_and_the_consumer_goes_on(bus: Bus) -> None:
    responder = MediaResponder(bus, "media-typed")
    await responder.start()
    try:
        control = bus.keys.media_control("media-typed")
        opened = await bus.request(control, LegOpen(call_id="c9", leg_id="l9"))
        assert isinstance(opened, LegOpened)
        before = skipped("MalformedMessage")
        wrong = {
            "v": 1,
            "type": "leg.update",
            "call_id": "c9",
            "ts": 1.0,
            "leg_id": "l9",
            "remote_port": "abc",
        }
        await bus.redis.xadd(control, {FIELD: msgpack.packb(wrong)})
        answer = await bus.request(control, LegUpdate(call_id="c9", leg_id="l9", remote_port=4000))
        assert isinstance(answer, Ack) and answer.ok
        assert [u.remote_port for u in responder.legs["l9"].updates] == [4000]
        assert skipped("MalformedMessage") == before + 1
    finally:
        await responder.stop()


async def test_a_group_reader_skips_a_wrongly_typed_entry_and_reads_on(bus: Bus) -> None:
    stream = bus.keys.media_control("media-group")
    await bus.ensure_group(stream, "media")
    before = skipped("MalformedMessage")
    await bus.redis.xadd(
        stream, {FIELD: msgpack.packb({"v": 1, "type": "leg.update", "leg_id": "l", "remote_port": "abc"})}
    )
    await bus.publish(stream, LegUpdate(leg_id="l", remote_port=4000))
    entries = await bus.read_group("media", "w1", {stream: ">"}, block_ms=100)
    assert [(type(e.message), e.message.remote_port) for e in entries] == [(LegUpdate, 4000)]  # type: ignore[attr-defined]
    assert skipped("MalformedMessage") == before + 1
    # No reader will ever decode it: acknowledged, so no lease claims and counts it again.
    pending = await bus.redis.xpending_range(stream, "media", min="-", max="+", count=10)
    assert [p["message_id"] for p in pending] == [entries[0].id.encode()]


async def test_a_group_reader_leaves_an_unknown_type_pending_for_a_newer_reader(bus: Bus) -> None:
    stream = bus.keys.sessions("probe-unknown")
    await bus.ensure_group(stream, "probe")
    unknown = await bus.redis.xadd(stream, {FIELD: msgpack.packb({"v": 1, "type": "from.the.future"})})
    assert await bus.read_group("probe", "w1", {stream: ">"}, block_ms=100) == []
    pending = await bus.redis.xpending_range(stream, "probe", min="-", max="+", count=10)
    assert [p["message_id"] for p in pending] == [unknown]


async def test_a_stream_ending_in_a_skipped_entry_is_not_read_again(bus: Bus) -> None:
    """The reader's cursor stays on the last entry it was given; the bus reads on after the skipped one
    instead of handing it (and counting it) again at every read."""
    stream = bus.keys.events("c-tail")
    first = await bus.publish(stream, Probe(seq=1))
    await bus.redis.xadd(stream, {FIELD: msgpack.packb({"v": 1, "type": "probe", "seq": "two"})})
    before = skipped("MalformedMessage")
    assert [e.id for e in await bus.read({stream: "0"})] == [first]
    for _ in range(3):
        assert await bus.read({stream: first}, block_ms=10) == []
    assert skipped("MalformedMessage") == before + 1
    third = await bus.publish(stream, Probe(seq=3))
    assert [e.id for e in await bus.read({stream: first})] == [third]
    assert [e.id for e in await bus.read({stream: "0"})] == [first, third]
