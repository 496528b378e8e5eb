"""The worker registry: one hash per role, one field per worker, refreshed by a heartbeat.

``workers:{role}`` maps a worker id to a JSON document (kept readable for ``redis-cli``): its
address, the port of its ``/metrics``, its load and capacity, whether it drains, and the time of
its last beat. A worker is live while its last beat is younger than the heartbeat TTL; readers
prune entries that are long dead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import redis.asyncio as aioredis

from activecall import metrics
from activecall.bus import REDIS_DOWN, Backoff, Keys
from activecall.contract import Role

log = logging.getLogger("activecall.registry")

ROLES = tuple(Role)
PRUNE_AFTER_TTLS = 60


@dataclass
class WorkerInfo:
    id: str
    role: str
    host: str
    pid: int
    metrics_port: int
    address: str = ""
    metrics_host: str = ""
    load: int = 0
    capacity: int = 0
    draining: bool = False
    started: float = field(default_factory=time.time)
    ts: float = field(default_factory=time.time)
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: bytes | str) -> WorkerInfo:
        doc = json.loads(data)
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def is_live(self, ttl: float, now: float | None = None) -> bool:
        return ((now or time.time()) - self.ts) <= ttl

    @property
    def metrics_target(self) -> str:
        """host:port where Prometheus scrapes this worker."""
        return f"{self.metrics_host or self.host}:{self.metrics_port}"

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.load)


class Heartbeat:
    """Writes this worker's entry every ``interval`` seconds until stopped; removes it on stop."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        info: WorkerInfo,
        load: Callable[[], int],
        interval: float = 1.0,
        owned: tuple[str, ...] = (),
        owned_ttl: float = 0.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.info = info
        self.load = load
        self.interval = interval
        # Keys only this worker reads (its control stream): each beat pushes their expiry
        # ``owned_ttl`` ahead, so a worker that dies leaves nothing behind for good.
        self.owned = owned
        self.owned_ttl_ms = int(owned_ttl * 1000)
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        self.info.load = self.load()
        self.info.ts = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.workers(self.info.role), self.info.id, self.info.to_json())
        for key in self.owned:
            pipe.pexpire(key, self.owned_ttl_ms)
        await pipe.execute()
        metrics.HEARTBEATS.labels(self.info.role).inc()
        metrics.WORKER_LOAD.labels(self.info.role).set(self.info.load)
        metrics.WORKER_CAPACITY.labels(self.info.role).set(self.info.capacity)
        metrics.WORKER_DRAINING.labels(self.info.role).set(int(self.info.draining))

    async def _run(self) -> None:
        # Retried at least twice an interval: once Redis is back the beat must reach it before the
        # edges, which restart their clocks then, count this worker as lost.
        backoff = Backoff(cap=self.interval / 2)
        while True:
            try:
                await self.beat()
                backoff.reset()
                await asyncio.sleep(self.interval)
            except REDIS_DOWN as exc:
                metrics.REDIS_RECONNECTS.inc()
                log.warning("heartbeat failed; redis unreachable", extra={"error": str(exc)})
                await asyncio.sleep(backoff.next_delay())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"heartbeat-{self.info.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        try:
            await self.redis.hdel(self.keys.workers(self.info.role), self.info.id)
        except REDIS_DOWN:
            log.warning("could not remove the registry entry; it will age out")


async def list_workers(
    redis: aioredis.Redis, keys: Keys, role: str, ttl: float, include_dead: bool = False
) -> list[WorkerInfo]:
    """The workers of one role, live ones only unless ``include_dead``; long-dead entries are pruned."""
    raw = await redis.hgetall(keys.workers(role))
    now = time.time()
    workers: list[WorkerInfo] = []
    stale: list[bytes | str] = []
    for worker_id, doc in raw.items():
        try:
            info = WorkerInfo.from_json(doc)
        except (ValueError, TypeError):
            stale.append(worker_id)
            continue
        if now - info.ts > ttl * PRUNE_AFTER_TTLS:
            stale.append(worker_id)
            continue
        if include_dead or info.is_live(ttl, now):
            workers.append(info)
    if stale:
        await redis.hdel(keys.workers(role), *stale)
    workers.sort(key=lambda w: (w.role, w.id))
    return workers


def pick_least_loaded(workers: list[WorkerInfo]) -> WorkerInfo | None:
    """The live, non-draining worker with the most free capacity (ties: lowest load ratio)."""
    candidates = [w for w in workers if not w.draining and w.free > 0]
    if not candidates:
        return None
    return min(candidates, key=lambda w: (w.load / max(w.capacity, 1), -w.free, w.id))
