"""Legs nobody will close, and what the media worker tells the reaper about the legs it holds.

The edge closes a leg when its call ends (``leg.close``). An edge that died closes nothing, and its
legs would go on sending 50 packets a second to callers long gone. So the worker closes a leg itself:

- ``media_timeout``: the leg reported ``media.timeout`` (no RTP for ``rtp_timeout``) and no
  ``leg.close`` or ``leg.update`` came within ``[media] orphan_grace`` (the leg's own clock,
  :meth:`~activecall.media.leg.Leg.orphaned`);
- ``no_edge``: no RTP for ``rtp_timeout + orphan_grace`` while the call record's edge has no live
  heartbeat: a held call, whose silence is no timeout, or one updated after its timeout;
- ``call_ended``: the call record has been final for ``orphan_grace`` and no ``leg.close`` came.

:class:`LegWatch` reads the last two from Redis every ``orphan_grace`` (within 0.25 to 5 s). A missing
record closes nothing: Redis may have restarted empty under live calls. Each such close goes on the
call's events as ``call.error`` (source ``media``, the error starting with ``media orphaned``) and is
counted in ``activecall_media_legs_orphaned_total{reason}``.

The watch also writes ``media:{worker}:legs``, the set of the calls the worker holds legs of, on
every heartbeat and with the heartbeat's TTL: the reaper (:mod:`activecall.reaper`) leaves a call
alone while a live worker lists it.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Final

from activecall.bus import Bus, as_str
from activecall.config import Config
from activecall.contract import FINAL_STATES, Role
from activecall.media.leg import Leg
from activecall.registry import list_workers
from activecall.store import record_time

MEDIA_TIMEOUT: Final = "media_timeout"
NO_EDGE: Final = "no_edge"
CALL_ENDED: Final = "call_ended"
REASONS: Final = (MEDIA_TIMEOUT, NO_EDGE, CALL_ENDED)
CHECK_MIN_S: Final = 0.25
CHECK_MAX_S: Final = 5.0

Orphan = tuple[Leg, str, str]  # the leg, the reason, what happened in words


class LegWatch:
    """The Redis side of a worker's legs: the set the reaper reads, and the records checked."""

    def __init__(self, bus: Bus, config: Config, worker_id: str) -> None:
        self.bus = bus
        self.key = bus.keys.media_legs(worker_id)
        self.ttl_ms = max(1, int(config.redis.heartbeat_ttl * 1000))
        self.heartbeat_ttl = config.redis.heartbeat_ttl
        self.grace = config.media.orphan_grace
        self.rtp_timeout = config.media.rtp_timeout

    @property
    def period(self) -> float:
        """Seconds between two checks of the records."""
        return min(max(self.grace, CHECK_MIN_S), CHECK_MAX_S)

    async def publish(self, call_ids: Collection[str]) -> None:
        """Rewrite the set of the calls held here (it expires unless rewritten within a heartbeat TTL)."""
        pipe = self.bus.redis.pipeline(transaction=True)
        pipe.delete(self.key)
        if call_ids:
            pipe.sadd(self.key, *call_ids)
            pipe.pexpire(self.key, self.ttl_ms)
        await pipe.execute()

    async def forget(self) -> None:
        await self.bus.redis.delete(self.key)

    async def orphans(self, legs: Sequence[Leg], now: float) -> list[Orphan]:
        """The legs to close because their call ended or their edge is gone (``now``: monotonic)."""
        if not legs:
            return []
        keys = self.bus.keys
        pipe = self.bus.redis.pipeline(transaction=False)
        for leg in legs:
            pipe.hmget(keys.call(leg.call_id), ["state", "ended", "edge"])
        records = await pipe.execute()
        wall = time.time()
        live_edges: set[str] | None = None
        found: list[Orphan] = []
        for leg, (state, ended, edge) in zip(legs, records, strict=True):
            if state is None:
                continue
            if as_str(state) in FINAL_STATES:
                since = wall - record_time(ended)
                if since >= self.grace:
                    found.append((leg, CALL_ENDED, f"its call ended {since:.1f} s ago and no leg.close came"))
                continue
            idle = now - leg.receiver.last_rx
            if idle < self.rtp_timeout + self.grace:
                continue
            if live_edges is None:
                workers = await list_workers(self.bus.redis, keys, Role.SIP_EDGE, self.heartbeat_ttl)
                live_edges = {w.id for w in workers}
            edge_id = as_str(edge or b"")
            if edge_id not in live_edges:
                found.append((leg, NO_EDGE, f"no RTP for {idle:.1f} s and its edge {edge_id!r} is gone"))
        return found
