"""The reaper: it ends the calls nobody holds any more.

A call's edge writes its end: the record ended, ``call.ended`` for its sessions, its leg closed. When
the edge dies (``kill -9``) nobody writes it, and the call would stay in ``calls:active`` with its
session entries, cursors and streams for ever. Every sip-edge and media process runs a
:class:`Reaper`; every ``[redis] reaper_interval`` each tries to take ``reaper:lock`` (``SET NX PX``
for one interval, never released), and the one that gets it sweeps ``calls:active``:

- a call whose record is gone or already final is only taken out of the set;
- a call is ended once its record is ``reaper_min_age`` old, its edge has no live heartbeat in
  ``workers:sip-edge`` and no live media worker lists it in ``media:{worker}:legs`` (each worker
  rewrites that set on every heartbeat). A record no edge ever took (no ``edge``: an outbound call the
  api queued) is ended only once it is ``reaper_unclaimed_age`` old.

A call whose edge died while its leg lives is left alone: the caller may still be there and another
edge may adopt it. If none does, its media worker closes the leg once the caller's RTP has stopped
(``[media] orphan_grace``, :mod:`activecall.media.orphans`) and a later sweep ends the call.

Ending a call is what the edge's end does (:func:`activecall.store.finish_commands`: the record
ended with reason ``reaped``, out of ``calls:active``, its keys and streams expiring) with
``call.state`` and ``call.ended`` (``by = "reaper"``) on its events, in one transaction watching the
record: a call an edge adopts or ends meanwhile is left to it. A session whose worker is alive (its
lease exists) stops on that ``call.ended`` and cleans up after itself; of the others the reaper
acknowledges and deletes the ``sessions:{role}`` entry and deletes the cursor. Leases expire by
themselves, and so do the port blocks of a dead media worker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from redis.exceptions import WatchError

from activecall import metrics
from activecall.bus import REDIS_DOWN, Backoff, Bus, Command, as_str, xadd_command
from activecall.config import RedisSettings
from activecall.contract import FINAL_STATES, SESSION_ROLES, CallState, EndReason, Role
from activecall.messages import CallEnded, CallStateChanged, SessionStart
from activecall.registry import list_workers
from activecall.store import finish_commands, record_time
from activecall.tasks import stop_tasks

log = logging.getLogger("activecall.reaper")

BY_REAPER: Final = "reaper"
CHUNK: Final = 500  # calls per pipeline, entries per XRANGE page


@dataclass(frozen=True)
class CallSeen:
    """What a sweep reads of a call record (``state`` empty: no record)."""

    call_id: str
    state: str
    edge: str
    created: float


@dataclass
class Sweep:
    """What one sweep did: the calls it ended, and those it only took out of ``calls:active``."""

    ended: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)


class Reaper:
    """Sweeps ``calls:active`` every ``reaper_interval`` when this process wins the lock."""

    def __init__(self, bus: Bus, worker_id: str, settings: RedisSettings | None = None) -> None:
        self.bus = bus
        self.worker_id = worker_id
        self.settings = settings or bus.settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reaper")

    async def stop(self) -> None:
        await stop_tasks([self._task])
        self._task = None

    async def _run(self) -> None:
        backoff = Backoff()
        interval = self.settings.reaper_interval
        while True:
            # Spread over the interval, so the processes started together do not all ask at once.
            await asyncio.sleep(interval * random.uniform(0.5, 1.0))
            try:
                await self.sweep()
                backoff.reset()
            except REDIS_DOWN as exc:
                metrics.REDIS_RECONNECTS.inc()
                log.warning("reaper sweep failed; redis unreachable", extra={"error": str(exc)})
                await asyncio.sleep(backoff.next_delay())
            except Exception:
                log.exception("reaper sweep failed")

    async def sweep(self) -> Sweep | None:
        """One sweep if this process takes the lock; None when another one swept in this interval."""
        lock_ms = max(1, int(self.settings.reaper_interval * 1000))
        if not await self.bus.redis.set(self.bus.keys.reaper_lock(), self.worker_id, nx=True, px=lock_ms):
            return None
        return await self.reap()

    async def reap(self) -> Sweep:
        """The sweep itself, without the lock."""
        metrics.REAPER_SWEEPS.inc()
        redis, keys = self.bus.redis, self.bus.keys
        done = Sweep()
        call_ids = sorted(as_str(m) for m in await redis.smembers(keys.calls_active()))
        if not call_ids:
            return done
        seen = await self._records(call_ids)
        ttl = self.settings.heartbeat_ttl
        live_edges = {w.id for w in await list_workers(redis, keys, Role.SIP_EDGE, ttl)}
        live_edges.add(self.worker_id)  # the edge sweeping is alive, even before its first beat
        now = time.time()
        abandoned: list[CallSeen] = []
        for call in seen:
            if not call.state or call.state in FINAL_STATES:
                done.unlisted.append(call.call_id)
            elif self._abandoned(call, live_edges, now):
                abandoned.append(call)
        if done.unlisted:
            await redis.srem(keys.calls_active(), *done.unlisted)
            metrics.REAPER_CALLS.labels("unlisted").inc(len(done.unlisted))
        held = await self._held_by_media([c.call_id for c in abandoned])
        for call in abandoned:
            if call.call_id not in held and await self._end(call):
                done.ended.append(call.call_id)
        if done.ended:
            metrics.REAPER_CALLS.labels("ended").inc(len(done.ended))
            await self._drop_sessions(done.ended)
            log.warning("reaped calls", extra={"calls": done.ended})
        return done

    def _abandoned(self, call: CallSeen, live_edges: set[str], now: float) -> bool:
        age = now - call.created
        if not call.edge:
            return age >= self.settings.reaper_unclaimed_age
        return call.edge not in live_edges and age >= self.settings.reaper_min_age

    async def _records(self, call_ids: Sequence[str]) -> list[CallSeen]:
        seen: list[CallSeen] = []
        keys = self.bus.keys
        for start in range(0, len(call_ids), CHUNK):
            chunk = call_ids[start : start + CHUNK]
            pipe = self.bus.redis.pipeline(transaction=False)
            for call_id in chunk:
                pipe.hmget(keys.call(call_id), ["state", "edge", "created"])
            for call_id, (state, edge, created) in zip(chunk, await pipe.execute(), strict=True):
                seen.append(
                    CallSeen(call_id, as_str(state or b""), as_str(edge or b""), record_time(created))
                )
        return seen

    async def _held_by_media(self, call_ids: Sequence[str]) -> set[str]:
        """The calls some live media worker holds a leg of."""
        if not call_ids:
            return set()
        redis, keys = self.bus.redis, self.bus.keys
        workers = await list_workers(redis, keys, Role.MEDIA, self.settings.heartbeat_ttl)
        if not workers:
            return set()
        pipe = redis.pipeline(transaction=False)
        for worker in workers:
            pipe.smismember(keys.media_legs(worker.id), list(call_ids))
        held: set[str] = set()
        for flags in await pipe.execute():
            held.update(c for c, flag in zip(call_ids, flags, strict=True) if flag)
        return held

    async def _end(self, call: CallSeen) -> bool:
        """End the call as its edge would have, unless its record changed since the sweep read it."""
        key = self.bus.keys.call(call.call_id)
        async with self.bus.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                state, edge = await pipe.hmget(key, ["state", "edge"])
                if (as_str(state or b""), as_str(edge or b"")) != (call.state, call.edge):
                    return False  # an edge adopted or ended it meanwhile
                pipe.multi()  # type: ignore[no-untyped-call]
                for command in self._end_commands(call):
                    pipe.execute_command(*command)
                await pipe.execute()
            except WatchError:
                return False
        return True

    def _end_commands(self, call: CallSeen) -> list[Command]:
        keys = self.bus.keys
        events, maxlen = keys.events(call.call_id), self.bus.settings.events_maxlen
        changed = CallStateChanged(
            call_id=call.call_id, state=CallState.ENDED, previous=call.state, reason=EndReason.REAPED
        )
        ended = CallEnded(call_id=call.call_id, reason=EndReason.REAPED, by=BY_REAPER)
        for message in (changed, ended):
            metrics.BUS_PUBLISHED.labels(message.TYPE).inc()
        return [
            *finish_commands(self.bus.settings, keys, call.call_id, EndReason.REAPED),
            xadd_command(events, changed, maxlen),
            xadd_command(events, ended, maxlen),
        ]

    async def _drop_sessions(self, call_ids: Sequence[str]) -> None:
        """The session entries and cursors of the ended calls that no live worker holds a lease of."""
        redis, keys = self.bus.redis, self.bus.keys
        for role in SESSION_ROLES:
            pipe = redis.pipeline(transaction=False)
            for call_id in call_ids:
                pipe.exists(keys.lease(role, call_id))
            unheld = {c for c, leased in zip(call_ids, await pipe.execute(), strict=True) if not leased}
            if not unheld:
                continue
            stream = keys.sessions(role)
            entries = [entry async for entry, call_id in self._session_entries(stream) if call_id in unheld]
            pipe = redis.pipeline(transaction=False)
            if entries:
                pipe.xack(stream, role, *entries)
                pipe.xdel(stream, *entries)
            pipe.delete(*(keys.cursor(role, c) for c in unheld))
            await pipe.execute()
            if entries:
                metrics.REAPER_SESSIONS.labels(role).inc(len(entries))

    async def _session_entries(self, stream: str) -> AsyncIterator[tuple[str, str]]:
        """(entry id, call id) of every session entry of ``stream``, page by page."""
        start = "-"
        while True:
            page = await self.bus.redis.xrange(stream, min=start, max="+", count=CHUNK) or []
            for entry in self.bus.decode_entries(stream, page):
                if isinstance(entry.message, SessionStart):
                    yield entry.id, entry.message.call_id
            if len(page) < CHUNK:
                return
            start = "(" + as_str(page[-1][0])
