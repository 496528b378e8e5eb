"""Call admission: the source ACL, and room for the call in every role seen through the worker registry.

A call needs a media leg and an asr, an llm and a tts session. The edge answers it only if the live,
non-draining workers of each role have room (capacity less load, from their heartbeats, less what
this edge admitted that their heartbeats may not show yet); otherwise it is refused with 503 and
Retry-After, and counted once, by the role that had no room (:class:`Admission`)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Iterable

import redis.asyncio as aioredis

from activecall.bus import REDIS_DOWN, Keys
from activecall.contract import SESSION_ROLES, Role
from activecall.registry import WorkerInfo, list_workers

log = logging.getLogger("activecall.sip_edge.app.admission")

REGISTRY_REFRESH_S = 0.5
# A read younger than this is not repeated before a refusal (a burst of refused calls reads once).
RECHECK_AFTER_S = 0.05
# An admitted call's session is claimed within this of its admission (the call is answered first,
# after its leg opens): a beat this much younger than the admission shows it in the worker's load.
# Longer counts calls twice (in the beats and here) and refuses calls there is room for.
SHOWN_AFTER_S = 0.5
ADMITTED_KEPT = 10_000  # a bound, whatever the beats say

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
    not placed on a worker (the role's consumer group hands them out): the calls this edge admitted
    are taken from the role's room as a whole until every live worker has beaten since (plus
    ``SHOWN_AFTER_S`` for the call to be answered and its session claimed), when its load shows them."""

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
        self._admitted: deque[float] = deque()  # wall-clock times of the calls admitted, oldest first
        self._reading: asyncio.Future[None] | None = None

    async def workers(self, max_age_s: float | None = None) -> list[WorkerInfo]:
        """Live workers (cached up to ``max_age_s``, by default ``refresh_s``); empty when the registry
        cannot be read. The calls that find the cache old while it is being read wait for that one
        read rather than each reading it again."""
        if time.monotonic() - self._read_at >= (self.refresh_s if max_age_s is None else max_age_s):
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

    def _free(self, worker: WorkerInfo) -> int:
        return worker.capacity - worker.load

    def _unshown(self, workers: list[WorkerInfo]) -> int:
        """The admitted calls that some live worker's last beat may not show yet."""
        if workers:
            shown_before = min(w.ts for w in workers) - SHOWN_AFTER_S
            while self._admitted and self._admitted[0] < shown_before:
                self._admitted.popleft()
        while len(self._admitted) > ADMITTED_KEPT:
            self._admitted.popleft()
        return len(self._admitted)

    async def has_room(self) -> bool:
        """Room for one more session among the role's live workers, all taken together. Before a
        refusal the registry is read again unless the cache is fresh: a worker that has just come up
        (or a load that has just dropped) must not be missed for a cached read."""
        if self._room_in(await self.workers()):
            return True
        return self._room_in(await self.workers(RECHECK_AFTER_S))

    def _room_in(self, workers: list[WorkerInfo]) -> bool:
        live = [w for w in workers if not w.draining]
        return sum(max(0, self._free(w)) for w in live) - self._unshown(live) > 0

    def admitted(self) -> None:
        self._admitted.append(time.time())


class MediaPool(RolePool):
    """Live media workers, with the legs this edge placed on each added to its load until its next
    beat, so a burst spreads out."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, ttl: float, refresh_s: float = REGISTRY_REFRESH_S
    ) -> None:
        super().__init__(redis, keys, Role.MEDIA, ttl, refresh_s)
        self._placed: dict[str, deque[float]] = {}  # worker id -> wall-clock times of the legs placed

    def _free(self, worker: WorkerInfo) -> int:
        placed = self._placed.get(worker.id)
        if placed is None:
            return super()._free(worker)
        # A leg is open (the worker answered the request) before the worker's next beat.
        while placed and placed[0] < worker.ts:
            placed.popleft()
        while len(placed) > ADMITTED_KEPT:
            placed.popleft()
        return super()._free(worker) - len(placed)

    async def has_capacity(self) -> bool:
        """A worker with a free leg; read again before a refusal, as :meth:`RolePool.has_room`."""
        for max_age_s in (None, RECHECK_AFTER_S):
            if any(not w.draining and self._free(w) > 0 for w in await self.workers(max_age_s)):
                return True
        return False

    async def pick(self, exclude: Iterable[str] = ()) -> WorkerInfo | None:
        """The non-draining worker with the most room (lowest load ratio), or None."""
        skip = set(exclude)
        candidates = [
            w for w in await self.workers() if not w.draining and w.id not in skip and self._free(w) > 0
        ]
        if not candidates:
            return None
        best = min(candidates, key=lambda w: ((w.capacity - self._free(w)) / max(w.capacity, 1), w.id))
        self._placed.setdefault(best.id, deque()).append(time.time())
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
