"""Calls outlive their media worker: the edge watches ``workers:media`` and moves the calls away.

Every ``poll_s`` the edge reads the registry (one HGETALL of a hash with a field per media worker). A
worker is lost when its beat has not changed for ``media.failover_after`` seconds of the edge's own
clock, so the clocks of other hosts do not matter, or when its entry is gone (it stopped, or was
pruned). A worker whose beat says ``draining`` asks for its calls to be moved. Each answered call on
such a worker gets :meth:`Call.move_media`: a new leg on a live worker and a re-INVITE. A draining
worker's call whose move failed (no worker took the leg, the peer refused) stays where it is and is
tried again ``DRAIN_RETRY_S`` later, ``DRAIN_TRIES`` times in all.

RFC 3261 section 14 asks that re-INVITEs sent automatically on a media failure come after a
randomized interval: each move waits up to ``MOVE_SPREAD_S`` first, and at most ``MOVES_AT_ONCE``
run at a time, so a worker's calls do not all re-INVITE in the same instant.

After the registry could not be read, every worker gets a fresh ``failover_after`` before it counts
as lost: it was the beats that stopped reaching Redis, not necessarily the workers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis

from activecall.bus import REDIS_DOWN, Keys
from activecall.contract import Role
from activecall.registry import WorkerInfo, list_workers
from activecall.sip_edge.app.call import MOVE_DRAINING, MOVE_LOST, Call, Spawn
from activecall.sip_edge.app.calls import Calls
from activecall.sip_edge.app.legs import LegClient

log = logging.getLogger("activecall.sip_edge.app.failover")

POLL_S: Final = 0.25
MOVE_SPREAD_S: Final = 0.2
MOVES_AT_ONCE: Final = 32
DRAIN_RETRY_S: Final = 2.0
DRAIN_TRIES: Final = 3
# With every worker well, the calls are looked through only every this many polls: for a leg on a
# worker the registry never showed (it came and went between two reads).
FULL_CHECK_EVERY: Final = 4


@dataclass
class Beat:
    ts: float  # the worker's last beat, on its own clock
    changed_at: float  # our monotonic clock when that beat was first seen


class Liveness:
    """What the registry reads say of each media worker: live, draining or lost."""

    def __init__(self, failover_after: float) -> None:
        self.failover_after = failover_after
        self.beats: dict[str, Beat] = {}
        self.draining: set[str] = set()
        self.started: dict[str, float] = {}  # worker id -> the start its beats say
        self.reborn: dict[str, float] = {}  # worker id -> when (our wall clock) it was seen restarted
        self.last_beat: dict[str, float] = {}  # kept after an entry goes, for heard_until

    def observe(self, workers: list[WorkerInfo], now: float, wall: float) -> None:
        """One registry read at monotonic ``now`` (``wall``: time.time() at the read)."""
        beats: dict[str, Beat] = {}
        for worker in workers:
            known = self.beats.get(worker.id)
            if known is None:  # first sight: the beat is as old as the worker's clock says
                beats[worker.id] = Beat(worker.ts, now - max(0.0, wall - worker.ts))
            elif worker.ts != known.ts:
                beats[worker.id] = Beat(worker.ts, now)
            else:
                beats[worker.id] = known
            self.last_beat[worker.id] = worker.ts
            if self.started.get(worker.id, worker.started) != worker.started:
                # The same id from a new process (a supervisor started it again): the old one's
                # legs died with it, even though the id beats on.
                self.reborn[worker.id] = wall
            self.started[worker.id] = worker.started
        self.beats = beats
        self.draining = {w.id for w in workers if w.draining}

    def restart_clocks(self, now: float) -> None:
        """Every worker gets a whole ``failover_after`` from ``now`` (the registry was unreadable)."""
        for beat in self.beats.values():
            beat.changed_at = now

    def lost(self, worker_id: str, now: float) -> bool:
        beat = self.beats.get(worker_id)
        return beat is None or now - beat.changed_at > self.failover_after

    def stale(self, now: float) -> set[str]:
        """Workers still in the registry whose beat stopped."""
        return {w for w, beat in self.beats.items() if now - beat.changed_at > self.failover_after}

    def forget_gone(self, in_use: set[str], reborn_in_use: frozenset[str] | set[str] = frozenset()) -> None:
        """Stop remembering workers gone from the registry that no call's leg is on any more, and
        restarts that no leg of the old process is left from."""
        for worker_id in self.last_beat.keys() - self.beats.keys() - in_use:
            del self.last_beat[worker_id]
            self.started.pop(worker_id, None)
        for worker_id in self.reborn.keys() - reborn_in_use:
            del self.reborn[worker_id]

    def outlived(self, worker_id: str, opened_at: float) -> bool:
        """Whether a leg opened at ``opened_at`` (wall clock) belongs to a process of ``worker_id``
        that has since been replaced."""
        return opened_at < self.reborn.get(worker_id, float("-inf"))

    def troubled(self, now: float) -> bool:
        """Whether any worker seen so far is lost, draining or restarted."""
        return bool(
            self.draining or self.reborn or self.stale(now) or self.last_beat.keys() - self.beats.keys()
        )

    def verdict(self, worker_id: str, now: float, opened_at: float = 0.0) -> str | None:
        """``lost``, ``draining`` or None (the worker is fine), for a leg opened at ``opened_at``
        (wall clock): a leg opened before its worker was seen restarted is lost."""
        if self.lost(worker_id, now) or self.outlived(worker_id, opened_at):
            return MOVE_LOST
        return MOVE_DRAINING if worker_id in self.draining else None

    def heard_until(self, worker_id: str) -> float:
        """Until when the caller heard a lost worker: its last beat (it may have played a little more,
        which the new leg plays again rather than leave a gap)."""
        return self.last_beat.get(worker_id, 0.0) or time.time() - self.failover_after


class MediaFailover:
    """The loop that moves the calls of lost and draining media workers."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        calls: Calls,
        legs: LegClient,
        spawn: Spawn,
        *,
        failover_after: float,
        registry_ttl: float,
        external_ip: str,
        new_key: bool = True,
        poll_s: float = POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.calls = calls
        self.legs = legs
        self.spawn = spawn
        self.registry_ttl = registry_ttl
        self.external_ip = external_ip
        self.new_key = new_key
        self.poll_s = poll_s
        self.clock = clock
        self.liveness = Liveness(failover_after)
        self.moving: set[str] = set()
        # (call, draining worker) moves that failed, and when to try again: the other workers may
        # have been full or restarting, and the drain timeout is only the last resort.
        self.stay: dict[tuple[str, str], tuple[float, int]] = {}  # -> (retry at, tries so far)
        self._slots = asyncio.Semaphore(MOVES_AT_ONCE)
        self._unread = False
        self._polls = 0
        self.running = True

    async def run(self) -> None:
        while self.running:
            await asyncio.sleep(self.poll_s)
            try:
                workers = await list_workers(
                    self.redis, self.keys, Role.MEDIA, self.registry_ttl, include_dead=True
                )
            except REDIS_DOWN as exc:
                if not self._unread:
                    log.warning("cannot read the media registry", extra={"error": str(exc)})
                self._unread = True
                continue
            self.check(workers)

    def check(self, workers: list[WorkerInfo]) -> None:
        """Take one registry read into account and start the moves it calls for."""
        now = self.clock()
        self.liveness.observe(workers, now, time.time())
        if self._unread:
            self._unread = False
            self.liveness.restart_clocks(now)
        self.legs.lost = self.liveness.stale(now)
        self._polls += 1
        if not self.liveness.troubled(now) and self._polls % FULL_CHECK_EVERY:
            return
        in_use: set[str] = set()
        reborn_in_use: set[str] = set()
        for call in list(self.calls.values()):
            leg = call.leg
            if leg is None:
                continue
            in_use.add(leg.worker)
            if self.liveness.outlived(leg.worker, leg.opened_at):
                reborn_in_use.add(leg.worker)
            if not call.answered or call.call_id in self.moving:
                continue
            reason = self.liveness.verdict(leg.worker, now, leg.opened_at)
            if reason is None or (
                reason == MOVE_DRAINING and not self._may_try(call.call_id, leg.worker, now)
            ):
                continue
            self.moving.add(call.call_id)
            heard_until = self.liveness.heard_until(leg.worker)
            self.spawn(self._move(call, reason, heard_until), f"move-media-{call.call_id}")
        self.liveness.forget_gone(in_use, reborn_in_use)
        if self.stay:
            held = {(c.call_id, c.leg.worker) for c in self.calls.values() if c.leg is not None}
            self.stay = {k: v for k, v in self.stay.items() if k in held}

    def _may_try(self, call_id: str, worker: str, now: float) -> bool:
        retry_at, tries = self.stay.get((call_id, worker), (0.0, 0))
        return tries < DRAIN_TRIES and now >= retry_at

    async def _move(self, call: Call, reason: str, heard_until: float) -> None:
        worker = call.leg.worker if call.leg is not None else ""
        try:
            await asyncio.sleep(random.uniform(0, MOVE_SPREAD_S))
            async with self._slots:
                log.info(
                    "moving a call off its media worker",
                    extra={"call_id": call.call_id, "media_worker": worker, "reason": reason},
                )
                moved = await call.move_media(reason, heard_until, self.external_ip, self.new_key)
            if not moved and reason == MOVE_DRAINING:
                tries = self.stay.get((call.call_id, worker), (0.0, 0))[1] + 1
                self.stay[(call.call_id, worker)] = (self.clock() + DRAIN_RETRY_S, tries)
        finally:
            self.moving.discard(call.call_id)
