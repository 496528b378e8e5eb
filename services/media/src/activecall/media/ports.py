"""RTP port blocks leased in Redis, and the even/odd port pairs handed to legs.

The range ``rtp_start_port..rtp_end_port`` is cut into blocks of ``port_block_size`` ports. A worker
leases a block by creating the key ``ports:{host}:{index}`` (value: its worker id) with ``SET NX PX``
and renews it with a compare-and-expire script on every heartbeat, so several workers on one host
never hand out the same port and a dead worker's block returns to the pool one TTL after its last
beat. Within a block, RTP gets even ports and RTCP the next odd one (RFC 3550 section 11). Binding
stays the final arbiter: a port some other program holds is skipped.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections import deque
from dataclasses import dataclass

import redis.asyncio as aioredis

from activecall.bus import REDIS_DOWN, Keys, as_str

log = logging.getLogger("activecall.media.ports")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class PortError(RuntimeError):
    """No port pair can be had: every leased block is full and no further block is free."""


@dataclass(frozen=True)
class PortBlock:
    index: int
    first: int
    last: int  # inclusive

    def pairs(self) -> list[tuple[int, int]]:
        """(rtp, rtcp) pairs inside the block: even RTP port, RTCP on the next one."""
        start = self.first + (self.first & 1)
        return [(p, p + 1) for p in range(start, self.last, 2)]


def blocks_of(start_port: int, end_port: int, block_size: int) -> list[PortBlock]:
    """The blocks of the range; a range smaller than one block is one block."""
    size = max(2, min(block_size, end_port - start_port + 1))
    count = max(1, (end_port - start_port + 1) // size)
    return [PortBlock(i, start_port + i * size, start_port + (i + 1) * size - 1) for i in range(count)]


class PortLease:
    """This worker's leases on port blocks of one host."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        host: str,
        owner: str,
        blocks: list[PortBlock],
        ttl_s: float,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.host = host
        self.owner = owner
        self.blocks = blocks
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.held: list[PortBlock] = []
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def key(self, block: PortBlock) -> str:
        return f"{self.keys.port_blocks(self.host)}:{block.index}"

    async def acquire(self) -> PortBlock:
        """Lease the first free block; raises PortError when every block is taken."""
        held = {b.index for b in self.held}
        for block in self.blocks:
            if block.index in held:
                continue
            if await self.redis.set(self.key(block), self.owner, nx=True, px=self.ttl_ms):
                self.held.append(block)
                log.info(
                    "leased port block", extra={"block": block.index, "ports": f"{block.first}-{block.last}"}
                )
                return block
        raise PortError(f"all {len(self.blocks)} port blocks on {self.host} are leased")

    async def renew(self) -> list[PortBlock]:
        """Extend every held lease; returns the blocks lost to another worker (dropped from ``held``)."""
        lost: list[PortBlock] = []
        for block in list(self.held):
            if await self._renew(keys=[self.key(block)], args=[self.owner, self.ttl_ms]):
                continue
            # Expired while Redis was unreachable: take it back unless someone else has it now.
            if await self.redis.set(self.key(block), self.owner, nx=True, px=self.ttl_ms):
                continue
            owner = await self.redis.get(self.key(block))
            log.error("port block lease lost", extra={"block": block.index, "owner": as_str(owner or b"")})
            self.held.remove(block)
            lost.append(block)
        return lost

    async def release(self) -> None:
        for block in self.held:
            try:
                await self._release(keys=[self.key(block)], args=[self.owner])
            except REDIS_DOWN:
                log.warning("could not release port block; it expires", extra={"block": block.index})
        self.held.clear()


@dataclass
class BoundPair:
    """The sockets of one leg: RTP, and RTCP unless rtcp-mux."""

    rtp_port: int
    rtcp_port: int
    rtp: socket.socket
    rtcp: socket.socket | None

    def close(self) -> None:
        self.rtp.close()
        if self.rtcp is not None:
            self.rtcp.close()


def _bind(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class PortPool:
    """Hands out port pairs from the leased blocks, least recently used first."""

    def __init__(self, lease: PortLease, bind_address: str) -> None:
        self.lease = lease
        self.bind_address = bind_address
        self._free: deque[tuple[int, int]] = deque()
        self._in_use: set[tuple[int, int]] = set()
        self._lock = asyncio.Lock()

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    async def start(self) -> None:
        self.add_block(await self.lease.acquire())

    def add_block(self, block: PortBlock) -> None:
        self._free.extend(block.pairs())

    def drop_block(self, block: PortBlock) -> None:
        """Stop handing out ports of a block whose lease was lost (legs holding one keep it)."""
        self._free = deque(p for p in self._free if not block.first <= p[0] <= block.last)

    def bind_now(self, rtcp_mux: bool) -> BoundPair | None:
        """Bind a free pair without waiting; None when the leased blocks are exhausted."""
        for _ in range(len(self._free)):
            pair = self._free.popleft()
            bound = self._try_bind(pair, rtcp_mux)
            if bound is not None:
                self._in_use.add(pair)
                return bound
            self._free.append(pair)  # held by some other program: try it again later
        return None

    async def bind(self, rtcp_mux: bool) -> BoundPair:
        """Bind a free pair, leasing one more block when the held ones are full."""
        bound = self.bind_now(rtcp_mux)
        if bound is not None:
            return bound
        async with self._lock:
            bound = self.bind_now(rtcp_mux)
            if bound is None:
                self.add_block(await self.lease.acquire())
                bound = self.bind_now(rtcp_mux)
        if bound is None:
            raise PortError("no bindable port in the leased blocks")
        return bound

    def _try_bind(self, pair: tuple[int, int], rtcp_mux: bool) -> BoundPair | None:
        rtp_port, rtcp_port = pair
        try:
            rtp = _bind(self.bind_address, rtp_port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return None
        rtcp = None
        if not rtcp_mux:
            try:
                rtcp = _bind(self.bind_address, rtcp_port)
            except OSError as exc:
                rtp.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                return None
        return BoundPair(rtp_port, rtcp_port, rtp, rtcp)

    def release(self, bound: BoundPair) -> None:
        bound.close()
        pair = (bound.rtp_port, bound.rtcp_port)
        if pair in self._in_use:
            self._in_use.discard(pair)
            if any(b.first <= pair[0] <= b.last for b in self.lease.held):
                self._free.append(pair)
