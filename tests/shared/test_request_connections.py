"""The connections of blocking requests (a leg request's XADD and BLPOP): one batch at a time on each,
kept for the next batch only when every reply of the last one was read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ResponseError

from activecall.bus import Bus, RequestConnections


@pytest.fixture
async def connections(bus: Bus) -> AsyncIterator[RequestConnections]:
    connections = RequestConnections(bus.redis.connection_pool)
    try:
        yield connections
    finally:
        await connections.close()


async def test_a_batch_gets_its_replies_and_the_connection_is_kept(
    bus: Bus, connections: RequestConnections
) -> None:
    key = bus.keys.reply("one")
    replies = await connections.execute([("RPUSH", key, "v"), ("BLPOP", key, 1)])
    assert replies == [1, [key.encode(), b"v"]]
    (kept,) = connections._idle
    assert await connections.execute([("BLPOP", key, 0.05)]) == [None]  # BLPOP timed out
    assert connections._idle == [kept]


async def test_an_error_reply_is_raised_after_every_reply_is_read(
    bus: Bus, connections: RequestConnections
) -> None:
    key = bus.keys.reply("text")
    with pytest.raises(ResponseError):
        await connections.execute([("SET", key, "text"), ("INCR", key), ("GET", key)])
    assert len(connections._idle) == 1  # nothing left unread: still usable
    assert await connections.execute([("GET", key)]) == [b"text"]


async def test_concurrent_batches_use_connections_of_their_own(
    bus: Bus, connections: RequestConnections
) -> None:
    keys = [bus.keys.reply(f"c{n}") for n in range(3)]
    waits = [asyncio.ensure_future(connections.execute([("BLPOP", key, 2)])) for key in keys]
    await asyncio.sleep(0.05)
    for key in reversed(keys):
        await bus.redis.rpush(key, "x")
    assert [await wait for wait in waits] == [[[key.encode(), b"x"]] for key in keys]
    assert len(connections._idle) == 3


async def test_a_cancelled_batch_drops_its_connection(bus: Bus, connections: RequestConnections) -> None:
    key = bus.keys.reply("cancelled")
    await connections.execute([("DEL", key)])
    assert len(connections._idle) == 1
    wait = asyncio.ensure_future(connections.execute([("BLPOP", key, 2)]))
    await asyncio.sleep(0.05)
    wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait
    assert connections._idle == []  # its BLPOP reply could still arrive
    await bus.redis.rpush(key, "late")
    assert await connections.execute([("LPOP", key)]) == [b"late"]  # a new connection, not the old reply


async def test_a_connection_the_server_closed_is_not_reused(
    bus: Bus, connections: RequestConnections
) -> None:
    (client_id,) = await connections.execute([("CLIENT", "ID")])
    (stale,) = connections._idle
    await bus.redis.execute_command("CLIENT", "KILL", "ID", client_id)
    await asyncio.sleep(0.05)
    assert await connections.execute([("PING",)]) == [b"PONG"]
    assert stale not in connections._idle
