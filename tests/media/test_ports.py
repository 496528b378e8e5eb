"""Port blocks leased in Redis and the port pairs bound from them."""

from __future__ import annotations

import asyncio
import socket

import pytest

from activecall.bus import Bus
from activecall.media.ports import PortBlock, PortError, PortLease, PortPool, blocks_of


def test_blocks_cut_the_range() -> None:
    assert blocks_of(12000, 12099, 40) == [PortBlock(0, 12000, 12039), PortBlock(1, 12040, 12079)]
    assert blocks_of(12000, 12009, 1000) == [PortBlock(0, 12000, 12009)]


def test_pairs_are_even_rtp_and_the_next_odd_rtcp() -> None:
    assert PortBlock(0, 12000, 12005).pairs() == [(12000, 12001), (12002, 12003), (12004, 12005)]
    assert PortBlock(3, 12001, 12006).pairs() == [(12002, 12003), (12004, 12005)]


def lease(bus: Bus, owner: str, ttl_s: float = 5.0, blocks: int = 3) -> PortLease:
    return PortLease(
        bus.redis, bus.keys, "host-a", owner, blocks_of(30000, 30000 + 10 * blocks - 1, 10), ttl_s
    )


async def test_two_workers_on_one_host_get_disjoint_blocks(bus: Bus) -> None:
    first, second = lease(bus, "media-1"), lease(bus, "media-2")
    a, b = await first.acquire(), await second.acquire()
    assert (a.index, b.index) == (0, 1)
    assert await bus.redis.get(first.key(a)) == b"media-1"
    assert await bus.redis.get(second.key(b)) == b"media-2"
    assert (await second.acquire()).index == 2
    with pytest.raises(PortError, match="all 3 port blocks on host-a are leased"):
        await lease(bus, "media-3").acquire()


async def test_a_lease_not_renewed_expires_and_another_worker_takes_the_block(bus: Bus) -> None:
    dead, alive = lease(bus, "media-dead", ttl_s=0.15, blocks=1), lease(bus, "media-alive", blocks=1)
    await dead.acquire()
    with pytest.raises(PortError):
        await alive.acquire()
    await asyncio.sleep(0.25)
    assert (await alive.acquire()).index == 0
    assert await dead.renew() == [PortBlock(0, 30000, 30009)]
    assert dead.held == []


async def test_renewal_keeps_the_lease_and_release_frees_it(bus: Bus) -> None:
    holder = lease(bus, "media-1", ttl_s=0.3, blocks=1)
    block = await holder.acquire()
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await holder.renew() == []
    assert await bus.redis.pttl(holder.key(block)) > 150
    await holder.release()
    assert await bus.redis.exists(holder.key(block)) == 0


async def test_an_expired_lease_nobody_took_is_taken_back_on_renewal(bus: Bus) -> None:
    holder = lease(bus, "media-1", blocks=1)
    block = await holder.acquire()
    await bus.redis.delete(holder.key(block))  # as if Redis lost it
    assert await holder.renew() == []
    assert await bus.redis.get(holder.key(block)) == b"media-1"


async def test_release_leaves_a_block_another_worker_holds(bus: Bus) -> None:
    holder = lease(bus, "media-1", blocks=1)
    block = await holder.acquire()
    await bus.redis.set(holder.key(block), "media-2")
    await holder.release()
    assert await bus.redis.get(holder.key(block)) == b"media-2"


async def test_pool_binds_pairs_skips_busy_ports_and_leases_more_blocks(bus: Bus) -> None:
    base = 31000
    blocks = [PortBlock(0, base, base + 3), PortBlock(1, base + 4, base + 7)]
    pool = PortPool(PortLease(bus.redis, bus.keys, "host-b", "media-1", blocks, 5.0), "127.0.0.1")
    await pool.start()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", base))  # another program holds the first RTP port
    try:
        first = await pool.bind(rtcp_mux=False)
        assert (first.rtp_port, first.rtcp_port) == (base + 2, base + 3)
        assert first.rtp.getsockname() == ("127.0.0.1", base + 2)
        assert first.rtcp is not None and first.rtcp.getsockname() == ("127.0.0.1", base + 3)
        second = await pool.bind(rtcp_mux=True)  # the held block is full: a second one is leased
        assert (second.rtp_port, second.rtcp) == (base + 4, None)
        assert [b.index for b in pool.lease.held] == [0, 1]
        pool.release(first)
        third = await pool.bind(rtcp_mux=False)
        assert third.rtp_port == base + 6  # least recently used first
        pool.release(second)
        pool.release(third)
        assert pool.in_use == 0
    finally:
        squatter.close()
        await pool.lease.release()
