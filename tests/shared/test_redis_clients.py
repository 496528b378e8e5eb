"""Clients that find the Redis master through real sentinels (Debian's redis-sentinel, a master and a
replica on loopback) and follow a failover; and the checks of the ``[redis]`` sentinel keys."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from activecall.bus import Bus, with_reconnect
from activecall.config import ConfigError, RedisSettings, load_config
from activecall.messages import Probe
from activecall.redis_clients import BlockingSentinelConnectionPool, async_client, sync_client
from activecall.testing.sentinel import MASTER_NAME, SentinelCluster


async def test_every_client_follows_the_master_through_a_failover(cluster: SentinelCluster) -> None:
    # The url's host and port are not used with sentinels: only its database number.
    settings = RedisSettings(url="redis://nowhere.invalid:1/3", sentinels=cluster.addresses)
    settings.sentinel_master = MASTER_NAME
    bus = Bus.from_settings(settings)
    edge = async_client(settings, aioredis.BlockingConnectionPool, max_connections=4, timeout=2)
    blocking = sync_client(settings, socket_timeout=1)
    assert isinstance(edge.connection_pool, BlockingSentinelConnectionPool)
    try:
        first = await bus.publish("s", Probe(seq=1))
        assert await edge.xlen("s") == 1 and blocking.xlen("s") == 1
        old = cluster.master_port()
        cluster.kill_master()
        second = await asyncio.wait_for(with_reconnect(lambda: bus.publish("s", Probe(seq=2)), "publish"), 30)
        assert cluster.wait_failover(old) != old
        entries = await bus.read({"s": "0"})
        assert [e.id for e in entries] == [first, second], "an acknowledged write was lost"
        assert await with_reconnect(lambda: edge.xlen("s"), "edge") == 2
        assert blocking.xlen("s") == 2
        assert int(blocking.info("keyspace")["db3"]["keys"]) == 1  # the url's database
    finally:
        await bus.close()
        await edge.aclose()
        blocking.close()


def test_a_sentinel_must_be_host_and_port() -> None:
    with pytest.raises(ConfigError, match=r"redis.sentinels: expected HOST:PORT, got 'sentinel-1'"):
        load_config(env={"ACTIVECALL_REDIS__SENTINELS": '["sentinel-1", "10.0.0.2:26379"]'})
