"""Call admission: the source ACL, and room for the call in every role seen through the worker registry.

A call needs a media leg and an asr, an llm and a tts session. The edge answers it only if the live,
non-draining workers of each role have room (capacity less load, from their heartbeats, less what
this edge admitted since it last read them); otherwise it is refused with 503 and Retry-After, and
counted once, by the role that had no room (:class:`Admission`)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Iterable

import redis.asyncio as aioredis

from activecall.bus import REDIS_DOWN, Keys
from activecall.contract import SESSION_ROLES, Role
from activecall.registry import WorkerInfo, list_workers

log = logging.getLogger("activecall.sip_edge.app.admission")

REGISTRY_REFRESH_S = 0.5

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AclError(ValueError):
    """An ACL entry is not a CIDR block or an address."""


def _networks(entries: Iterable[str], what: str) -> list[IpNetwork]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise AclError(f"acl.{what}: {entry!r} is not an address or CIDR block") from None
    return networks


class Acl:
    """Source filter for inbound INVITEs: a denied source is refused; with an allow list, only the
    sources it contains are admitted (an empty allow list admits everyone not denied)."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow = _networks(allow, "allow")
        self.deny = _networks(deny, "deny")

    def permits(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if any(ip in network for network in self.deny):
            return False
        return not self.allow or any(ip in network for network in self.allow)


class RolePool:
    """Live workers of one role from ``workers:{role}``, read at most every ``refresh_s``. Sessions are
    not placed on a worker (the role's consumer group hands them out): what this edge admitted since
    the last read is taken from the role's room as a whole."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, role: str, ttl: float, refresh_s: float = REGISTRY_REFRESH_S
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.role = role
        self.ttl = ttl
        self.refresh_s = refresh_s
        self._workers: list[WorkerInfo] = []
        self._read_at = float("-inf")
        self._admitted_since_read = 0
        self._reading: asyncio.Future[None] | None = None

    async def workers(self) -> list[WorkerInfo]:
        """Live workers (cached); empty when the registry cannot be read. The calls that find the cache
        old while it is being read wait for that one read rather than each reading it again."""
        if time.monotonic() - self._read_at >= self.refresh_s:
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._read())
            await asyncio.shield(self._reading)
        return self._workers

    async def _read(self) -> None:
        try:
            self._workers = await list_workers(self.redis, self.keys, self.role, self.ttl)
        except REDIS_DOWN as exc:
            log.warning("cannot read the worker registry", extra={"role": self.role, "error": str(exc)})
            self._workers = []
        finally:
            self._reading = None
        self._read_at = time.monotonic()
        self._fresh_read()

    def _fresh_read(self) -> None:
        """The heartbeats just read count what was admitted before: forget it."""
        self._admitted_since_read = 0

    def _free(self, worker: WorkerInfo) -> int:
        return worker.capacity - worker.load

    async def has_room(self) -> bool:
        """Room for one more session among the role's live workers, all taken together."""
        room = sum(max(0, self._free(w)) for w in await self.workers() if not w.draining)
        return room - self._admitted_since_read > 0

    def admitted(self) -> None:
        self._admitted_since_read += 1


class MediaPool(RolePool):
    """Live media workers, with the legs this edge placed since the last read added to their load so
    a burst spreads out."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, ttl: float, refresh_s: float = REGISTRY_REFRESH_S
    ) -> None:
        super().__init__(redis, keys, Role.MEDIA, ttl, refresh_s)
        self._placed_since_read: Counter[str] = Counter()

    def _fresh_read(self) -> None:
        super()._fresh_read()
        self._placed_since_read.clear()

    def _free(self, worker: WorkerInfo) -> int:
        return super()._free(worker) - self._placed_since_read[worker.id]

    async def has_capacity(self) -> bool:
        return any(not w.draining and self._free(w) > 0 for w in await self.workers())

    async def pick(self, exclude: Iterable[str] = ()) -> WorkerInfo | None:
        """The non-draining worker with the most room (lowest load ratio), or None."""
        skip = set(exclude)
        candidates = [
            w for w in await self.workers() if not w.draining and w.id not in skip and self._free(w) > 0
        ]
        if not candidates:
            return None
        best = min(candidates, key=lambda w: ((w.capacity - self._free(w)) / max(w.capacity, 1), w.id))
        self._placed_since_read[best.id] += 1
        return best


class Admission:
    """Whether a new call finds room: media (a worker with a free leg) and each session role."""

    def __init__(self, media: MediaPool, redis: aioredis.Redis, keys: Keys, ttl: float) -> None:
        self.media = media
        self.sessions = {role: RolePool(redis, keys, role, ttl) for role in SESSION_ROLES}

    async def lacking(self) -> str | None:
        """The first role without room for one more call, or None."""
        if not await self.media.has_capacity():
            return Role.MEDIA
        for role, pool in self.sessions.items():
            if not await pool.has_room():
                return role
        return None

    def admitted(self) -> None:
        for pool in self.sessions.values():
            pool.admitted()
