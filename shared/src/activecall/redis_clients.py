"""Clients of the project's Redis: the server at ``[redis] url``, or the master that Redis Sentinel
names (``[redis] sentinels`` and ``sentinel_master``).

With sentinels, a client asks them for the master's address whenever it opens a connection, so after
a failover (the master died, the sentinels promoted a replica) the next connection goes to the new
master; ``url`` then gives only the database number and the credentials. See the Sentinel client
guidelines: https://redis.io/docs/latest/develop/reference/sentinel-clients/ (ask each sentinel in
turn for the master, never trust a master that is not one: redis-py's Sentinel does both).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.connection import parse_url
from redis.maint_notifications import MaintNotificationsConfig
from redis.sentinel import Sentinel

from activecall.config import RedisSettings

# How long a sentinel may take to answer where the master is; the next sentinel is asked after it.
SENTINEL_TIMEOUT_S = 1.0


class BlockingSentinelConnectionPool(AsyncSentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The master's connections, at most ``max_connections``; a caller waits up to ``timeout`` for one."""


def sentinel_addresses(settings: RedisSettings) -> list[tuple[str, int]]:
    addresses = []
    for entry in settings.sentinels:
        host, _, port = entry.rpartition(":")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def _database_and_credentials(settings: RedisSettings) -> dict[str, Any]:
    """What ``url`` says besides where the server is (with sentinels the master's address is theirs)."""
    options: dict[str, Any] = parse_url(settings.url)  # type: ignore[no-untyped-call]
    return {k: v for k, v in options.items() if k not in ("host", "port", "path", "connection_class")}


def _sentinel_options() -> dict[str, Any]:
    return {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S}


def async_client(
    settings: RedisSettings,
    pool_class: type[aioredis.ConnectionPool] = aioredis.ConnectionPool,
    **pool_options: Any,
) -> aioredis.Redis:
    """An asyncio client owning its pool (``pool_options`` go to the pool; a
    ``BlockingConnectionPool`` stays blocking with sentinels).

    A new connection sends no CLIENT SETINFO and no maintenance-notifications handshake: Redis before
    7.2 refuses the one, the servers we run refuse the other, and each refusal redis-py swallows stays
    in a reference cycle (exception, traceback, frame) with the frames of whoever opened the connection
    (a call, on the edge) until the garbage collector runs."""
    options: dict[str, Any] = {
        "decode_responses": False,
        "health_check_interval": 10,
        "driver_info": None,
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        **pool_options,
    }
    if not settings.sentinels:
        return aioredis.Redis.from_pool(pool_class.from_url(settings.url, **options))
    sentinels = AsyncSentinel(sentinel_addresses(settings), sentinel_kwargs=_sentinel_options())  # type: ignore[no-untyped-call]
    sentinel_pool = (
        BlockingSentinelConnectionPool
        if issubclass(pool_class, aioredis.BlockingConnectionPool)
        else AsyncSentinelConnectionPool
    )
    pool = sentinel_pool(  # type: ignore[no-untyped-call]
        settings.sentinel_master, sentinels, **_database_and_credentials(settings), **options
    )
    return aioredis.Redis.from_pool(pool)


def sync_client(settings: RedisSettings, **options: Any) -> redis.Redis:
    """A blocking client (``options`` as for ``redis.Redis``: timeouts)."""
    if not settings.sentinels:
        return redis.Redis.from_url(settings.url, **options)
    sentinels = Sentinel(sentinel_addresses(settings), sentinel_kwargs=_sentinel_options())  # type: ignore[no-untyped-call]
    client: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        settings.sentinel_master, **_database_and_credentials(settings), **options
    )
    return client
