"""The parts of redis-py's asyncio connection the bus uses beyond its public interface.

``SharedConnection`` and ``RequestConnections`` (activecall.bus) write to a connection's stream writer
and read replies straight from its parser, and check its reader and writer for a closed socket. These
are private attributes: shared/pyproject.toml bounds redis-py below the next minor release, and this
test says whether a new release still has them.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from activecall.bus import Bus, pack_commands


def test_the_pool_makes_connections() -> None:
    assert callable(aioredis.ConnectionPool.make_connection)
    assert "nowait" in inspect.signature(AbstractConnection.disconnect).parameters


async def test_a_connection_has_the_stream_and_parser_the_bus_uses(bus: Bus) -> None:
    connection: AbstractConnection = bus.redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    await connection.connect()  # type: ignore[no-untyped-call]
    try:
        reader, writer = connection._reader, connection._writer
        parser: Any = connection._parser
        assert isinstance(reader, asyncio.StreamReader) and not reader.at_eof()
        assert isinstance(writer, asyncio.StreamWriter) and not writer.is_closing()
        assert inspect.iscoroutinefunction(parser.read_response)
        assert "Hiredis" in type(parser).__name__  # the replies are parsed in C
        writer.write(pack_commands([("SET", "internals", "1"), ("GET", "internals"), ("INCR", "internals")]))
        replies = [await parser.read_response() for _ in range(3)]
        assert replies == [b"OK", b"1", 2]
    finally:
        await connection.disconnect(nowait=True)
    assert connection._writer is None and connection._reader is None
