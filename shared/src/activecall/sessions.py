"""Call sessions claimed by one worker of a role, with a lease, a cursor and takeover.

The sip-edge posts a :class:`~activecall.messages.SessionStart` on ``sessions:{role}`` when a
call starts. Workers of the role read that stream in one consumer group; the worker that reads an
entry claims the call by taking its lease (``call:{id}:lease:{role}``, a key with a TTL holding the
worker id) and keeps the lease alive while it works. It records how far it got in each of the
call's streams in a cursor hash (``call:{id}:cursor:{role}``).

If the worker dies its lease expires and its session entry stays pending in the group. Every worker
runs XAUTOCLAIM with a minimum idle time equal to the lease TTL; the owner keeps its entries from
going idle by re-claiming them (XCLAIM JUSTID) whenever it renews the lease, so only entries of dead
workers are taken. Leases are renewed from a thread of the worker's own
(:class:`activecall.leases.LeaseKeeper`), so a worker whose event loop stalls keeps them; one whose
loop has not run for ``STALL_LIMIT_TTLS`` lease TTLs loses them. The new owner takes the lease and
resumes from the cursor: delivery is at least once, so handlers are idempotent by stream id or
(turn_id, seq).

A draining worker (SIGTERM) hands its sessions over rather than wait for their calls to end, when
another live worker of the role is in the registry: it stops each session as a dying worker would,
releases the lease, and posts the session's ``SessionStart`` again on ``sessions:{role}`` (deleting
its own entry), where a live worker's blocking group read takes it at once. That worker finds the
cursor and resumes the session as after a takeover. With no other worker it waits as before, up to
the drain timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from activecall import metrics
from activecall.bus import FIELD, REDIS_DOWN, Backoff, Bus, Entry, as_str, with_reconnect
from activecall.leases import RELEASE_IF_OWNER, LeaseKeeper
from activecall.messages import CallError, SessionStart
from activecall.registry import list_workers
from activecall.tasks import stop_tasks

log = logging.getLogger("activecall.sessions")

NOTE_PREFIX = "@"
# A worker whose event loop has not run for this many lease TTLs is stuck: its leases lapse.
STALL_LIMIT_TTLS = 5


@dataclass
class Session:
    role: str
    call_id: str
    entry_id: str
    start: SessionStart
    taken_over: bool = False
    cursor: dict[str, str] = field(default_factory=dict)


class SessionContext:
    """What a session handler gets: its session, the bus, and its place in the call's streams.

    ``read`` moves the read position; ``processed`` marks an entry as handled and ``save`` writes
    the handled positions to the cursor, so a worker taking over re-reads only what was not handled.
    ``notes`` are small values saved with the cursor (an utterance counter, a turn number).
    """

    def __init__(self, bus: Bus, session: Session, worker_id: str) -> None:
        self.bus = bus
        self.session = session
        self.worker_id = worker_id
        streams = {k: v for k, v in session.cursor.items() if not k.startswith(NOTE_PREFIX)}
        self.positions: dict[str, str] = dict(streams)
        self.handled: dict[str, str] = dict(streams)
        self.notes: dict[str, str] = {
            k[len(NOTE_PREFIX) :]: v for k, v in session.cursor.items() if k.startswith(NOTE_PREFIX)
        }
        self._saved: dict[str, str] = dict(session.cursor)

    @property
    def call_id(self) -> str:
        return self.session.call_id

    def position(self, stream: str) -> str:
        return self.positions.get(stream, "0")

    async def read(self, streams: Sequence[str], count: int = 100, block_ms: int = 1000) -> list[Entry]:
        """Read the next entries of the call's streams after the positions reached so far; while Redis
        is away, wait for it (the read is the same again)."""
        entries = await with_reconnect(
            lambda: self.bus.read({s: self.position(s) for s in streams}, count=count, block_ms=block_ms),
            f"read {self.session.role} session streams",
        )
        for entry in entries:
            self.positions[entry.stream] = entry.id
            metrics.BUS_CONSUMED.labels(entry.message.TYPE).inc()
        return entries

    def processed(self, entry: Entry) -> None:
        self.handled[entry.stream] = entry.id

    async def save(self) -> None:
        """Persist the handled positions, so a worker taking over resumes after them."""
        wanted = {**self.handled, **{NOTE_PREFIX + k: v for k, v in self.notes.items()}}
        changed = {k: v for k, v in wanted.items() if self._saved.get(k) != v}
        if not changed:
            return
        key = self.bus.keys.cursor(self.session.role, self.call_id)
        await with_reconnect(lambda: self.bus.redis.hset(key, mapping=changed), "save a session cursor")  # type: ignore[arg-type]
        self._saved.update(changed)

    async def commit(self, entry: Entry) -> None:
        self.processed(entry)
        await self.save()


SessionHandler = Callable[[SessionContext], Awaitable[None]]


class SessionWorker:
    """Claims sessions of one role and runs ``handler`` for each, with lease renewal and takeover."""

    def __init__(
        self,
        bus: Bus,
        role: str,
        worker_id: str,
        handler: SessionHandler,
        capacity: int = 100,
        lease_ttl: float | None = None,
    ) -> None:
        self.bus = bus
        self.role = role
        self.worker_id = worker_id
        self.handler = handler
        self.capacity = capacity
        self.lease_ttl = lease_ttl if lease_ttl is not None else bus.settings.lease_ttl
        self.stream = bus.keys.sessions(role)
        self.group = role
        self.draining = False
        self.active: dict[str, tuple[Session, asyncio.Task[None]]] = {}
        self.leases = LeaseKeeper(
            bus.settings,
            bus.keys,
            role,
            worker_id,
            self.lease_ttl,
            STALL_LIMIT_TTLS * self.lease_ttl,
            self._lease_lost,
        )
        self._release = bus.redis.register_script(RELEASE_IF_OWNER)
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._redis_failed_at = float("-inf")

    @property
    def load(self) -> int:
        return len(self.active)

    @property
    def free(self) -> int:
        return 0 if self.draining else max(0, self.capacity - self.load)

    @property
    def lease_ms(self) -> int:
        return int(self.lease_ttl * 1000)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await self._ensure_group()
        self.leases.start(asyncio.get_running_loop())
        self._tasks = [
            asyncio.create_task(self._loop(self._claim_new, 0.0), name=f"{self.role}-claim"),
            asyncio.create_task(
                self._loop(self._take_over, self.lease_ttl / 2), name=f"{self.role}-takeover"
            ),
            asyncio.create_task(self._tick_leases(), name=f"{self.role}-lease-tick"),
        ]

    async def _ensure_group(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self.bus.ensure_group(self.stream, self.group)
                return
            except REDIS_DOWN:
                metrics.REDIS_RECONNECTS.inc()
                await asyncio.sleep(backoff.next_delay())

    async def drain(self) -> None:
        """Take no new session; hand the held ones to another live worker of the role, or, with none,
        wait for them to end."""
        self.draining = True
        # A blocked read would still claim what arrives; an entry it took and did not start stays
        # pending and another worker takes it once it has been idle for a lease.
        for task in self._tasks:
            if task.get_name().endswith("-claim"):
                task.cancel()
        try:
            if self.active and await self._successor_exists():
                await self.hand_over()
        except REDIS_DOWN as exc:
            log.warning("could not hand sessions over", extra={"role": self.role, "error": str(exc)})
        await self._idle.wait()

    async def _successor_exists(self) -> bool:
        workers = await list_workers(
            self.bus.redis, self.bus.keys, self.role, self.bus.settings.heartbeat_ttl
        )
        return any(w.id != self.worker_id and not w.draining for w in workers)

    async def hand_over(self) -> None:
        """Stop every held session and post it again for another worker of the role to resume."""
        held = list(self.active.values())
        await stop_tasks([task for _, task in held])
        keys = self.bus.keys
        pipe = self.bus.redis.pipeline(transaction=False)  # run in order, in one round trip
        for session, _ in held:
            self._forget(session.call_id)
            # The lease goes first: the worker that reads the new entry must be able to take it.
            await self._release(
                keys=[keys.lease(self.role, session.call_id)], args=[self.worker_id], client=pipe
            )
            pipe.xadd(self.stream, {FIELD: session.start.encode()})
            pipe.xack(self.stream, self.group, session.entry_id)
            pipe.xdel(self.stream, session.entry_id)
        await pipe.execute()
        metrics.SESSIONS_HANDED_OVER.labels(self.role).inc(len(held))
        for session, _ in held:
            log.info("session handed over", extra={"role": self.role, "call_id": session.call_id})

    async def stop(self) -> None:
        """Stop at once; held leases run out and other workers take the sessions over."""
        await stop_tasks(self._tasks + [task for _, task in self.active.values()])
        self._tasks = []
        for call_id in list(self.active):
            self._forget(call_id)
        await asyncio.to_thread(self.leases.stop)

    async def _loop(self, step: Callable[[], Awaitable[None]], period: float) -> None:
        backoff = Backoff()
        while True:
            try:
                await step()
                backoff.reset()
            except REDIS_DOWN as exc:
                self._redis_failed_at = time.monotonic()
                metrics.REDIS_RECONNECTS.inc()
                log.warning("redis unreachable", extra={"role": self.role, "error": str(exc)})
                await asyncio.sleep(backoff.next_delay())
                if "NOGROUP" in str(exc):
                    await self._ensure_group()
                continue
            except Exception as exc:
                if "NOGROUP" in str(exc):  # Redis restarted empty: recreate the group
                    await self._ensure_group()
                    continue
                raise
            if period:
                await asyncio.sleep(period * random.uniform(0.8, 1.0))

    # ---------------------------------------------------------------- claiming

    async def _claim_new(self) -> None:
        free = self.free
        if not free:
            await asyncio.sleep(0.05)
            return
        entries = await self.bus.read_group(
            self.group, self.worker_id, {self.stream: ">"}, count=min(free, 10), block_ms=500
        )
        for entry in entries:
            await self._begin(entry, taken_over=False)

    async def _take_over(self) -> None:
        """Claim the sessions whose holder has not re-claimed them for a lease TTL. Right after Redis
        was away every entry looks idle, and every lease may have lapsed: the live holders take
        theirs again within a TTL (:mod:`activecall.leases`), so this waits that long first."""
        if time.monotonic() - self._redis_failed_at < self.lease_ttl:
            return
        start = "0-0"
        while self.free:
            start, entries = await self.bus.autoclaim(
                self.stream,
                self.group,
                self.worker_id,
                self.lease_ms,
                start_id=start,
                count=min(self.free, 10),
            )
            for entry in entries:
                await self._begin(entry, taken_over=True)
            if start == "0-0":
                return

    async def _begin(self, entry: Entry, taken_over: bool) -> None:
        message = entry.message
        if not isinstance(message, SessionStart):
            await self.bus.ack(self.stream, self.group, entry.id)
            return
        call_id = message.call_id
        if call_id in self.active or self.draining:
            return
        lease_key = self.bus.keys.lease(self.role, call_id)
        taken = await self.bus.redis.set(lease_key, self.worker_id, nx=True, px=self.lease_ms)
        if not taken and as_str(await self.bus.redis.get(lease_key) or b"") != self.worker_id:
            return  # a live worker holds the lease; its renewal re-claims the entry
        raw_cursor = await self.bus.redis.hgetall(self.bus.keys.cursor(self.role, call_id))
        cursor = {as_str(k): as_str(v) for k, v in raw_cursor.items()}
        # A cursor means another worker ran the session before (it died or handed the session over).
        taken_over = taken_over or bool(cursor)
        session = Session(self.role, call_id, entry.id, message, taken_over=taken_over, cursor=cursor)
        ctx = SessionContext(self.bus, session, self.worker_id)
        task = asyncio.create_task(self._run(ctx), name=f"{self.role}-session-{call_id}")
        self.active[call_id] = (session, task)
        self.leases.hold(call_id, entry.id)
        self._idle.clear()
        metrics.SESSIONS_CLAIMED.labels(self.role).inc()
        if taken_over:
            metrics.SESSIONS_TAKEN_OVER.labels(self.role).inc()
        metrics.SESSIONS_ACTIVE.labels(self.role).set(self.load)
        log.info(
            "session taken over" if taken_over else "session claimed",
            extra={"role": self.role, "call_id": call_id, "cursor": cursor},
        )

    async def _run(self, ctx: SessionContext) -> None:
        """Run the handler until the session ends. A handler that fails because Redis went away runs
        again from the session's cursor once Redis answers, as a worker taking the session over would:
        the call goes on, and its session entry and lease stay this worker's."""
        session = ctx.session
        finished = False
        try:
            while not finished:
                try:
                    await self.handler(ctx)
                    finished = True
                except REDIS_DOWN as exc:
                    log.warning(
                        "session handler lost redis; resuming from the cursor",
                        extra={"role": self.role, "call_id": session.call_id, "error": str(exc)},
                    )
                    metrics.REDIS_RECONNECTS.inc()
                    ctx = await self._resumed(session)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            finished = True
            log.exception("session handler failed", extra={"role": self.role, "call_id": session.call_id})
            try:
                await self.bus.emit(session.call_id, CallError(source=self.role, error=str(exc)))
            except REDIS_DOWN:
                log.warning(
                    "could not report the failure", extra={"role": self.role, "call_id": session.call_id}
                )
        finally:
            self._forget(session.call_id)
            if finished:
                await with_reconnect(lambda: self._finish(session), f"end a {self.role} session")

    async def _resumed(self, session: Session) -> SessionContext:
        """A fresh context for ``session`` from its cursor in Redis, read once Redis answers."""
        await asyncio.sleep(Backoff().next_delay())
        key = self.bus.keys.cursor(self.role, session.call_id)
        raw = await with_reconnect(lambda: self.bus.redis.hgetall(key), f"read a {self.role} cursor")
        cursor = {as_str(k): as_str(v) for k, v in raw.items()}
        resumed = Session(self.role, session.call_id, session.entry_id, session.start, True, cursor)
        return SessionContext(self.bus, resumed, self.worker_id)

    def _forget(self, call_id: str) -> None:
        self.active.pop(call_id, None)
        self.leases.drop(call_id)
        metrics.SESSIONS_ACTIVE.labels(self.role).set(self.load)
        if not self.active:
            self._idle.set()

    async def _finish(self, session: Session) -> None:
        keys = self.bus.keys
        await self.bus.ack(self.stream, self.group, session.entry_id)
        pipe = self.bus.redis.pipeline(transaction=False)
        pipe.xdel(self.stream, session.entry_id)
        pipe.delete(keys.cursor(self.role, session.call_id))
        await pipe.execute()
        await self._release(keys=[keys.lease(self.role, session.call_id)], args=[self.worker_id])

    # ---------------------------------------------------------------- leases

    async def _tick_leases(self) -> None:
        """Tell the lease keeper that this event loop runs."""
        while True:
            self.leases.tick()
            await asyncio.sleep(self.lease_ttl / 3)

    def _lease_lost(self, call_id: str) -> None:
        """Another worker holds the lease now: this worker's session of the call stops."""
        held = self.active.get(call_id)
        if held is None:
            return
        log.warning("session lease lost", extra={"role": self.role, "call_id": call_id})
        metrics.SESSIONS_LOST.labels(self.role).inc()
        self._forget(call_id)
        held[1].cancel()
