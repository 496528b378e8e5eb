"""The Redis Streams bus: key names, publishing, reading, consumer groups and request/reply.

Every key of one call carries the call id as a Redis Cluster hash tag (``call:{id}:events``), so
the same code runs on one Redis, on Sentinel and on a Cluster. Stream entries hold one field,
``m``, the msgpack envelope of :mod:`activecall.messages`. Entries whose type or version this
process does not know, and malformed ones (a field missing or of the wrong type), are counted and
skipped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from activecall import metrics, tokens
from activecall.config import RedisSettings
from activecall.messages import Message, MessageError, UnknownMessage, decode
from activecall.redis_clients import async_client

log = logging.getLogger("activecall.bus")

FIELD = b"m"
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

T = TypeVar("T")
# Idle connections kept for blocking requests; more are opened while more requests are in flight. A
# burst of calls wants as many at once as it has requests in flight, and opening one costs more than a
# request (a TCP handshake, HELLO, and redis-py reading its own version from the package metadata).
MAX_IDLE_CONNECTIONS = 64
# Redis answers a command that does not block within milliseconds; this long without a reply means it
# hangs (a stopped process, a partition that sent no reset), and the connection is given up.
STALL_TIMEOUT_S = 5.0
# One Redis command as sent on the wire: its name, then its arguments.
Command = tuple[str | bytes | int | float, ...]


class BusTimeout(TimeoutError):
    """No reply arrived in time."""


@dataclass(frozen=True)
class Keys:
    """Key names, all under one configurable prefix."""

    prefix: str = "ac:"

    def call(self, call_id: str) -> str:
        return f"{self.prefix}call:{{{call_id}}}"

    def events(self, call_id: str) -> str:
        return f"{self.call(call_id)}:events"

    def audio_in(self, call_id: str) -> str:
        return f"{self.call(call_id)}:audio:in"

    def audio_out(self, call_id: str) -> str:
        return f"{self.call(call_id)}:audio:out"

    def say(self, call_id: str) -> str:
        return f"{self.call(call_id)}:say"

    def call_stream(self, call_id: str, name: str) -> str:
        return f"{self.call(call_id)}:{name}"

    def dialog(self, call_id: str) -> str:
        """The call's SIP dialog and media leg as the edge holding it wrote them (JSON)."""
        return f"{self.call(call_id)}:dialog"

    def sip_call(self, sip_call_id: str) -> str:
        """SIP Call-ID to our call id, for a request of a dialog another edge set up."""
        return f"{self.prefix}sip-call:{{{sip_call_id}}}"

    def lease(self, role: str, call_id: str) -> str:
        return f"{self.call(call_id)}:lease:{role}"

    def cursor(self, role: str, call_id: str) -> str:
        return f"{self.call(call_id)}:cursor:{role}"

    def history(self, call_id: str) -> str:
        return f"{self.call(call_id)}:history"

    def calls_active(self) -> str:
        return f"{self.prefix}calls:active"

    def sessions(self, role: str) -> str:
        return f"{self.prefix}sessions:{role}"

    def tts_phrase(self, digest: str) -> str:
        """A fixed phrase's speech, shared by the tts workers (activecall.tts.shared_phrases)."""
        return f"{self.prefix}tts:phrase:{digest}"

    def media_control(self, worker_id: str) -> str:
        return f"{self.prefix}media:{worker_id}:control"

    def edge_control(self, edge_id: str) -> str:
        return f"{self.prefix}edge:{edge_id}:control"

    def originate(self) -> str:
        return f"{self.prefix}edge:originate"

    def workers(self, role: str) -> str:
        return f"{self.prefix}workers:{role}"

    def media_legs(self, worker_id: str) -> str:
        """The set of the calls a media worker holds legs of, rewritten on its every heartbeat."""
        return f"{self.prefix}media:{worker_id}:legs"

    def reaper_lock(self) -> str:
        return f"{self.prefix}reaper:lock"

    def port_blocks(self, host: str) -> str:
        return f"{self.prefix}ports:{host}"

    def reply(self, token: str) -> str:
        return f"{self.prefix}reply:{token}"


@dataclass(frozen=True)
class Entry:
    """One decoded stream entry."""

    stream: str
    id: str
    message: Message


class Backoff:
    """Exponential backoff with jitter, for reconnecting to Redis. The cap is short: while Redis is
    away the callers hear nothing new, and each consumer is back at most ``cap`` after it returns (a
    refused connection costs Redis nothing)."""

    def __init__(self, base: float = 0.05, cap: float = 0.5) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 16)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


def xadd_command(stream: str, message: Message, maxlen: int | None) -> Command:
    """The XADD of one message, capped approximately (``MAXLEN ~``) unless ``maxlen`` is None."""
    if maxlen is None:
        return ("XADD", stream, "*", FIELD, message.encode())
    return ("XADD", stream, "MAXLEN", "~", maxlen, "*", FIELD, message.encode())


def pack_commands(commands: Iterable[Command]) -> bytes:
    """Commands in the Redis protocol (RESP arrays of bulk strings), as redis-py's encoder writes them
    (str as UTF-8, numbers as repr) at a fraction of its cost."""
    out = bytearray()
    for command in commands:
        out += b"*%d\r\n" % len(command)
        for arg in command:
            if isinstance(arg, bytes):
                data = arg
            elif isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, int | float) and not isinstance(arg, bool):
                data = repr(arg).encode()
            else:
                raise TypeError(f"cannot send {type(arg).__name__} to Redis")
            out += b"$%d\r\n%b\r\n" % (len(data), data)
    return bytes(out)


def first_error(replies: list[Any]) -> list[Any]:
    """The replies, unless one of them is an error: then that error is raised."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


@dataclass
class _Batch:
    size: int
    future: asyncio.Future[list[Any]]
    sent_at: float
    replies: list[Any] = field(default_factory=list)


class _Disconnects:
    """Connections being closed without waiting (a cancelled or broken batch must not block);
    ``wait`` lets a ``close`` finish them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, connection: AbstractConnection) -> None:
        task = asyncio.get_running_loop().create_task(connection.disconnect(nowait=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class SharedConnection:
    """One Redis connection used by many tasks at once, for commands that do not block.

    Each caller's batch of commands is queued; the batches of one loop iteration leave in one write,
    and a reader task hands the replies back in order. Per batch this costs a fraction of a pipeline
    on a pooled connection (no pool lock, no per-command timeouts, one write however many tasks
    wrote), and a cancelled caller leaves no unread replies behind. Blocking commands (BLPOP,
    XREAD BLOCK) would stall every batch queued after them: they belong on a pooled connection.

    A batch left without its replies for ``stall_timeout`` seconds gives the connection up: every
    batch in flight fails with a timeout and the next ``execute`` connects again. One timer watches
    the oldest batch, so a batch costs no timer of its own.
    """

    def __init__(self, pool: aioredis.ConnectionPool, stall_timeout: float = STALL_TIMEOUT_S) -> None:
        self._pool = pool
        self._stall_timeout = stall_timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self._connection: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._batches: deque[_Batch] = deque()
        self._out: list[bytes] = []
        self._flush: asyncio.Handle | None = None
        self._disconnects = _Disconnects()

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in order and return their replies; an error reply is raised."""
        if self._connection is None:
            await self._connect()
            if self._connection is None:
                raise RedisConnectionError("the connection to Redis was lost")
        loop = asyncio.get_running_loop()
        batch = _Batch(len(commands), loop.create_future(), loop.time())
        self._out.append(pack_commands(commands))
        self._batches.append(batch)
        if self._flush is None:
            self._flush = loop.call_soon(self._write)
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._stall_timeout, self._check_stall)
        return first_error(await batch.future)

    def _check_stall(self) -> None:
        self._watchdog = None
        connection = self._connection
        if not self._batches or connection is None:
            return
        loop = asyncio.get_running_loop()
        waited = loop.time() - self._batches[0].sent_at
        if waited < self._stall_timeout:
            self._watchdog = loop.call_later(self._stall_timeout - waited, self._check_stall)
            return
        error = RedisTimeoutError(f"Redis sent no reply for {waited:.1f} s; reconnecting")
        self._lost(connection, error)

    async def _connect(self) -> None:
        async with self._lock:
            if self._connection is None:
                connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
                await connection.connect()
                self._connection = connection
                self._reader = asyncio.get_running_loop().create_task(
                    self._read(connection), name="redis-shared-reader"
                )

    def _write(self) -> None:
        self._flush = None
        data, self._out = self._out, []
        connection = self._connection
        if connection is None or connection._writer is None:
            return  # the batches behind these bytes have failed already
        try:
            connection._writer.write(b"".join(data))
        except (RuntimeError, OSError) as exc:
            self._lost(connection, RedisConnectionError(f"writing to Redis failed: {exc}"))

    async def _read(self, connection: AbstractConnection) -> None:
        # The parser, not connection.read_response(): that one sets up a timeout and formats an error
        # text for every reply, which costs more than reading the reply.
        parser: Any = connection._parser
        try:
            while True:
                reply = await parser.read_response()
                batch = self._batches[0]
                batch.replies.append(reply)
                if len(batch.replies) == batch.size:
                    self._batches.popleft()
                    if not batch.future.done():
                        batch.future.set_result(batch.replies)
        except asyncio.CancelledError:
            self._lost(connection, RedisConnectionError("connection closed"))
            raise
        except Exception as exc:  # whatever broke the stream, every waiter must hear of it
            error = exc if isinstance(exc, REDIS_DOWN) else RedisConnectionError(str(exc))
            self._lost(connection, error)

    def _lost(self, connection: AbstractConnection, error: Exception) -> None:
        """Fail every batch in flight; the next ``execute`` connects again."""
        if self._connection is not connection:
            return
        self._connection = None
        self._out = []
        batches, self._batches = self._batches, deque()
        for batch in batches:
            if not batch.future.done():
                batch.future.set_exception(error)
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        self._disconnects.start(connection)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        connection, reader = self._connection, self._reader
        if connection is not None:
            self._lost(connection, RedisConnectionError("connection closed"))
        if reader is not None:
            try:
                await reader
            except asyncio.CancelledError:
                pass
        await self._disconnects.wait()


class RequestConnections:
    """Redis connections for command batches that end with a blocking command, one batch at a time
    on each: one write, the replies read straight from the parser, the connection kept for the next
    batch unless the batch failed or was cancelled (its replies could still be on the way). They are
    the client's own rather than borrowed from redis-py's pool, whose lock, health check and per-read
    timeout cost more than the round trip. A batch whose replies have not all come ``stall_timeout``
    seconds after its blocking command should have returned fails with a timeout."""

    def __init__(
        self,
        pool: aioredis.ConnectionPool,
        max_idle: int = MAX_IDLE_CONNECTIONS,
        stall_timeout: float = STALL_TIMEOUT_S,
    ) -> None:
        self._pool = pool
        self._max_idle = max_idle
        self._stall_timeout = stall_timeout
        self._idle: list[AbstractConnection] = []
        self._disconnects = _Disconnects()

    async def execute(self, commands: Sequence[Command], blocking_s: float = 0.0) -> list[Any]:
        """Send ``commands`` and return their replies; an error reply is raised once all are read.
        ``blocking_s``: how long the batch's blocking command may wait by itself."""
        connection = self._take() or await self._connect()
        reusable = False
        try:
            writer = connection._writer
            if writer is None:
                raise RedisConnectionError("the connection to Redis was lost")
            writer.write(pack_commands(commands))
            parser: Any = connection._parser
            limit = blocking_s + self._stall_timeout
            try:
                async with asyncio.timeout(limit):
                    replies = [await parser.read_response() for _ in commands]
            except TimeoutError:
                raise RedisTimeoutError(f"Redis sent no reply within {limit:.1f} s") from None
            reusable = True
        finally:
            if reusable and len(self._idle) < self._max_idle:
                self._idle.append(connection)
            else:
                self._disconnects.start(connection)
        return first_error(replies)

    def _take(self) -> AbstractConnection | None:
        while self._idle:
            connection = self._idle.pop()
            reader, writer = connection._reader, connection._writer
            if reader is not None and writer is not None and not reader.at_eof() and not writer.is_closing():
                return connection
            self._disconnects.start(connection)  # closed by the server while idle
        return None

    async def _connect(self) -> AbstractConnection:
        connection: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        await connection.connect()  # type: ignore[no-untyped-call]
        return connection

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            self._disconnects.start(connection)
        await self._disconnects.wait()


class SkippedTails:
    """Where a cursor reader's next read starts when its streams end in entries the bus skipped.

    A reader moves its cursor to the last entry it was given. Entries that cannot be decoded are not
    given, so a stream ending in one would be read from before it again, at once and forever. The bus
    remembers that after the reader's position a stream holds only skipped entries up to a later id,
    and reads on from there while the reader asks from that position.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._after: dict[str, tuple[str, str]] = {}  # stream -> (the reader's position, read on from)

    def starts(self, streams: dict[str, str]) -> dict[str, str]:
        if not self._after:
            return streams
        after = self._after
        moved = {}
        for stream, cursor in streams.items():
            known = after.get(stream)
            moved[stream] = known[1] if known is not None and known[0] == cursor else cursor
        return moved

    def note(self, stream: str, cursor: str, last_read: str, last_given: str | None) -> None:
        """A read of ``stream`` after ``cursor`` went up to ``last_read`` and gave up to ``last_given``."""
        if last_given == last_read or cursor == "$":
            self._after.pop(stream, None)
            return
        self._after[stream] = (last_given or cursor, last_read)
        if len(self._after) > self._limit:
            del self._after[next(iter(self._after))]


def _field_map(fields: list[bytes] | None) -> dict[bytes, bytes] | None:
    """A raw entry's [field, value, ...] as the dict ``decode_entries`` takes (None: deleted)."""
    return None if fields is None else dict(zip(fields[::2], fields[1::2], strict=True))


def as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Bus:
    """Typed access to the streams of the design, on one Redis client."""

    def __init__(self, redis: aioredis.Redis, settings: RedisSettings | None = None) -> None:
        self.redis = redis
        self.settings = settings or RedisSettings()
        self.keys = Keys(self.settings.prefix)
        self.shared = SharedConnection(redis.connection_pool)
        self.requests = RequestConnections(redis.connection_pool)
        self.skipped_tails = SkippedTails()

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> Bus:
        return cls(async_client(settings), settings)

    async def close(self) -> None:
        await self.shared.close()
        await self.requests.close()
        await self.redis.aclose()

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Non-blocking commands on the shared connection, sent in one write with other tasks' ones."""
        return await self.shared.execute(commands)

    async def execute_alone(self, commands: Sequence[Command], blocking_s: float = 0.0) -> list[Any]:
        """Commands on a connection of their own, for batches ending with a blocking one (BLPOP) that
        may wait ``blocking_s``: one write, the replies in order, an error reply raised once all are
        read, a timeout raised when Redis stalls."""
        return await self.requests.execute(commands, blocking_s)

    # ---------------------------------------------------------------- writing

    def _cap(self, maxlen: int | None) -> int | None:
        if maxlen is None:
            return self.settings.events_maxlen
        return maxlen or None

    async def publish(self, stream: str, message: Message, maxlen: int | None = None) -> str:
        """XADD one message, capping the stream approximately (``MAXLEN ~``).

        ``maxlen`` None means the events cap of the settings; 0 means no cap (for streams whose
        entries must stay until acknowledged, such as ``sessions:{role}``).
        """
        entry_id = await self.redis.xadd(
            stream, {FIELD: message.encode()}, maxlen=self._cap(maxlen), approximate=True
        )
        metrics.BUS_PUBLISHED.labels(message.TYPE).inc()
        return as_str(entry_id)

    async def publish_many(
        self, items: Iterable[tuple[str, Message]], maxlen: int | None = None
    ) -> list[str]:
        """XADD several messages in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        count = 0
        for stream, message in items:
            pipe.xadd(
                stream,
                {FIELD: message.encode()},
                maxlen=self._cap(maxlen),
                approximate=True,
            )
            metrics.BUS_PUBLISHED.labels(message.TYPE).inc()
            count += 1
        if not count:
            return []
        return [as_str(i) for i in await pipe.execute()]

    async def emit(self, call_id: str, message: Message) -> str:
        """Append an event to the call's events stream."""
        message.call_id = message.call_id or call_id
        return await self.publish(self.keys.events(call_id), message)

    # ---------------------------------------------------------------- reading

    def decode_entries(
        self, stream: str, entries: Sequence[Any], malformed: list[str] | None = None
    ) -> list[Entry]:
        """The entries that decode; the ids of malformed ones are added to ``malformed`` if given."""
        out: list[Entry] = []
        for raw_id, fields in entries:
            entry_id = as_str(raw_id)
            if fields is None:  # deleted while pending
                continue
            data = fields.get(FIELD)
            try:
                if data is None:
                    raise MessageError("entry has no message field")
                message = decode(data)
            except MessageError as exc:
                metrics.BUS_SKIPPED.labels(type(exc).__name__).inc()
                if malformed is not None and not isinstance(exc, UnknownMessage):
                    malformed.append(entry_id)
                log.warning(
                    "skipped bus entry", extra={"stream": stream, "entry": entry_id, "error": str(exc)}
                )
                continue
            out.append(Entry(stream, entry_id, message))
        return out

    async def read(
        self, streams: dict[str, str], count: int = 100, block_ms: int | None = None
    ) -> list[Entry]:
        """XREAD from several streams, each after the given id ("$" for new, "0" for all).

        The command is packed by hiredis and the reply read raw: redis-py packs each of the 2 x streams
        arguments in Python and parses every entry into a dict, which for a read over a few hundred
        streams (the media worker's) costs more than the entries read.

        Entries that cannot be decoded are counted and skipped once: a stream ending in them is read on
        after them while the caller asks from the entry before (see :class:`SkippedTails`).
        """
        starts = self.skipped_tails.starts(streams)
        args = [b"XREAD", b"COUNT", b"%d" % count]
        if block_ms is not None:
            args += [b"BLOCK", b"%d" % block_ms]
        args += [b"STREAMS", *(name.encode() for name in starts), *(i.encode() for i in starts.values())]
        command = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]
        pool = self.redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(command, check_health=False)
            reply = await connection.read_response()
        except BaseException:
            await connection.disconnect()  # a read cut short leaves its reply on the connection
            raise
        finally:
            await pool.release(connection)
        entries: list[Entry] = []
        if not reply:
            return entries
        for raw_stream, items in reply.items() if isinstance(reply, dict) else reply:  # RESP3 or RESP2
            stream = as_str(raw_stream)
            pairs = [(entry_id, _field_map(fields)) for entry_id, fields in items]
            decoded = self.decode_entries(stream, pairs)
            entries.extend(decoded)
            if pairs:
                last_given = decoded[-1].id if decoded else None
                self.skipped_tails.note(stream, streams[stream], as_str(pairs[-1][0]), last_given)
        return entries

    async def _decode_group_entries(self, group: str, stream: str, entries: Sequence[Any]) -> list[Entry]:
        """Decode entries read in a consumer group and acknowledge the malformed ones: no reader will
        ever decode them, so left pending they would be claimed and counted again every lease. An
        entry of an unknown type stays pending for a newer reader in the group to claim."""
        malformed: list[str] = []
        decoded = self.decode_entries(stream, entries, malformed)
        if malformed:
            await self.ack(stream, group, *malformed)
        return decoded

    async def ensure_group(self, stream: str, group: str, start_id: str = "0") -> None:
        """XGROUP CREATE with MKSTREAM; an existing group (BUSYGROUP) is fine."""
        try:
            await self.redis.xgroup_create(stream, group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_group(
        self, group: str, consumer: str, streams: dict[str, str], count: int = 10, block_ms: int | None = None
    ) -> list[Entry]:
        """XREADGROUP; ids are ">" for new entries or "0" for this consumer's pending ones."""
        reply = await self.redis.xreadgroup(group, consumer, streams, count=count, block=block_ms)  # type: ignore[arg-type]
        out: list[Entry] = []
        for stream, entries in reply.items() if isinstance(reply, dict) else reply or ():
            out.extend(await self._decode_group_entries(group, as_str(stream), entries))
        return out

    async def ack(self, stream: str, group: str, *ids: str) -> int:
        if not ids:
            return 0
        return int(await self.redis.xack(stream, group, *ids))

    async def autoclaim(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, start_id: str = "0-0", count: int = 10
    ) -> tuple[str, list[Entry]]:
        """XAUTOCLAIM entries idle longer than ``min_idle_ms``; returns the next start id and the entries."""
        reply = await self.redis.xautoclaim(
            stream, group, consumer, min_idle_ms, start_id=start_id, count=count
        )
        next_id, entries = as_str(reply[0]), reply[1]
        return next_id, await self._decode_group_entries(group, stream, entries)

    # ---------------------------------------------------------------- request / reply

    async def request(self, stream: str, message: Message, wait_s: float | None = None) -> Message:
        """Send a message carrying ``reply_to`` and wait for the single answer pushed there."""
        reply_key = self.keys.reply(tokens.token_hex(8))
        message.reply_to = reply_key  # type: ignore[attr-defined]
        await self.publish(stream, message, maxlen=self.settings.events_maxlen)
        wait = wait_s if wait_s is not None else self.settings.reply_timeout
        popped = await self.redis.blpop([reply_key], timeout=wait)
        if popped is None:
            raise BusTimeout(f"no reply to {message.TYPE} on {stream} within {wait:.1f} s")
        reply = popped[1]
        return decode(reply if isinstance(reply, bytes) else reply.encode())

    async def reply(self, reply_to: str, message: Message, ttl_s: int = 30) -> None:
        if not reply_to:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(reply_to, message.encode())
        pipe.expire(reply_to, ttl_s)
        await pipe.execute()


async def with_reconnect(
    operation: Callable[[], Awaitable[T]],
    what: str,
    stop: asyncio.Event | None = None,
    backoff: Backoff | None = None,
) -> T:
    """Run ``operation`` until it succeeds, backing off while Redis is unreachable."""
    backoff = backoff or Backoff()
    while True:
        try:
            result = await operation()
        except REDIS_DOWN as exc:
            if stop is not None and stop.is_set():
                raise
            delay = backoff.next_delay()
            metrics.REDIS_RECONNECTS.inc()
            log.warning(
                "redis unreachable; retrying", extra={"op": what, "error": str(exc), "delay_s": delay}
            )
            await asyncio.sleep(delay)
            continue
        backoff.reset()
        return result


def now_ms() -> int:
    return int(time.time() * 1000)
