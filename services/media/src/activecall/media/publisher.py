"""Everything a worker appends to the bus, written in one round trip per tick for all calls.

Caller frames go to ``call:{id}:audio:in`` (capped at ``audio_maxlen``), events to
``call:{id}:events`` (capped at ``events_maxlen``). Each XADD is packed by hiredis when it is
queued, and a tick's commands leave in one write on one connection with replies switched off, so
one reply comes back per tick: redis-py's own pipeline packs in Python and parses a reply per
command, which at 50 frames per call-second was most of the bus's share of the CPU. The price: an
XADD that Redis refuses (a key of the wrong type) goes unnoticed.

A call's audio XADD puts the frame, written by the bus's one encoder, behind the command's head
packed once per call (:class:`AudioCommand`).

A write still in flight when the next tick ends is not doubled: the items wait and leave with the
next one. While Redis is away the items are kept, up to ``max_pending`` (oldest dropped first,
counted), and the RTP streams go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from typing import Final

import hiredis

from activecall import metrics
from activecall.bus import FIELD, REDIS_DOWN, Backoff, Bus
from activecall.media.metrics import STATS
from activecall.messages import AudioFrame, Message

log = logging.getLogger("activecall.media.publisher")

MAX_PENDING: Final = 200_000
CLOSE_WAIT_S: Final = 1.0
_XADD: Final = b"XADD"
_MAXLEN: Final = b"MAXLEN"
_APPROX: Final = b"~"
_AUTO_ID: Final = b"*"
_REPLY_OFF: Final = hiredis.pack_command((b"CLIENT", b"REPLY", b"OFF"))  # type: ignore[arg-type]
_REPLY_ON: Final = hiredis.pack_command((b"CLIENT", b"REPLY", b"ON"))  # type: ignore[arg-type]

_BULK_EMPTY: Final = b"$0\r\n\r\n"  # how hiredis packs an empty last argument

Item = tuple[bytes, str]  # the packed XADD, the message type


class AudioCommand:
    """The packed XADD of one call's caller frame: the same bytes as ``hiredis.pack_command`` makes of
    it, with the command, the stream and the cap packed once."""

    __slots__ = ("call_id", "sample_rate", "_command_head")

    def __init__(self, stream: str, maxlen: bytes, call_id: str, sample_rate: int) -> None:
        self.call_id = call_id
        self.sample_rate = sample_rate
        command = hiredis.pack_command((_XADD, stream, _MAXLEN, _APPROX, maxlen, _AUTO_ID, FIELD, b""))  # type: ignore[arg-type]
        assert command.endswith(_BULK_EMPTY)
        self._command_head = command[: -len(_BULK_EMPTY)]

    def pack(self, pcm: bytes, seq: int, at_ms: int, ts: float) -> bytes:
        frame = AudioFrame(
            call_id=self.call_id, ts=ts, pcm=pcm, sample_rate=self.sample_rate, seq=seq, at_ms=at_ms
        )
        body = frame.encode()
        return b"".join((self._command_head, b"$%d\r\n" % len(body), body, b"\r\n"))


class BusWriter:
    def __init__(self, bus: Bus, *, publish_audio: bool = True, max_pending: int = MAX_PENDING) -> None:
        self.bus = bus
        self.publish_audio = publish_audio
        self.max_pending = max_pending
        self._items: deque[Item] = deque()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(base=0.1)
        self._retry_at = 0.0
        self._audio_maxlen = str(bus.settings.audio_maxlen).encode()
        self._events_maxlen = str(bus.settings.events_maxlen).encode()
        self._audio: dict[str, AudioCommand] = {}  # call id -> its audio:in XADD
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self._items)

    def event(self, call_id: str, message: Message) -> None:
        message.call_id = message.call_id or call_id
        self._add(self.bus.keys.events(call_id), message.encode(), self._events_maxlen, message.TYPE)

    def frame(self, call_id: str, pcm: bytes, sample_rate: int, seq: int, at_ms: int) -> None:
        """Caller audio for ``audio:in`` (dropped when the writer was made with publish_audio=False)."""
        if not self.publish_audio:
            return
        audio = self._audio.get(call_id)
        if audio is None or audio.sample_rate != sample_rate:
            audio = AudioCommand(self.bus.keys.audio_in(call_id), self._audio_maxlen, call_id, sample_rate)
            self._audio[call_id] = audio
        self._enqueue(audio.pack(pcm, seq, at_ms, time.time()), AudioFrame.TYPE)
        STATS.frames_published += 1

    def forget(self, call_id: str) -> None:
        """The call's leg closed here: drop what was packed once for its audio."""
        self._audio.pop(call_id, None)

    def _add(self, stream: str, data: bytes, maxlen: bytes, type_name: str) -> None:
        args = (_XADD, stream, _MAXLEN, _APPROX, maxlen, _AUTO_ID, FIELD, data)
        self._enqueue(hiredis.pack_command(args), type_name)  # type: ignore[arg-type]  # the stub types a 1-tuple

    def _enqueue(self, command: bytes, type_name: str) -> None:
        self._items.append((command, type_name))
        if len(self._items) > self.max_pending:
            self._items.popleft()
            STATS.bus_dropped += 1

    def flush(self) -> None:
        """Start writing what is pending unless a write is in flight (called at the end of a tick)."""
        if not self._items or (self._task is not None and not self._task.done()):
            return
        if time.monotonic() < self._retry_at:
            return
        batch = list(self._items)
        self._items.clear()
        self._task = asyncio.create_task(self._write(batch), name="media-bus-writer")

    async def _write(self, batch: list[Item]) -> None:
        try:
            await self._send(batch)
        except REDIS_DOWN as exc:
            self._requeue(batch)
            self._retry_at = time.monotonic() + self._backoff.next_delay()
            metrics.REDIS_RECONNECTS.inc()
            log.warning("bus write failed; keeping the items", extra={"error": str(exc), "items": len(batch)})
            return
        self._backoff.reset()
        self.written += len(batch)
        for type_name, count in Counter(item[1] for item in batch).items():
            metrics.BUS_PUBLISHED.labels(type_name).inc(count)

    async def _send(self, batch: list[Item]) -> None:
        """One write and one reply: the XADDs go between CLIENT REPLY OFF and ON, so Redis answers
        only the last command (reading a reply per entry cost more than the XADDs themselves)."""
        pool = self.bus.redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            commands = [_REPLY_OFF, *(item[0] for item in batch), _REPLY_ON]
            await connection.send_packed_command(b"".join(commands), check_health=False)
            answer = await connection.read_response()
            if answer not in (b"OK", "OK"):
                raise ConnectionError(f"unexpected answer to CLIENT REPLY ON: {answer!r}")
        except BaseException:
            await connection.disconnect()  # never hand back a connection whose replies are off
            raise
        finally:
            await pool.release(connection)

    def _requeue(self, batch: list[Item]) -> None:
        room = self.max_pending - len(self._items)
        keep = batch[-room:] if room > 0 else []
        STATS.bus_dropped += len(batch) - len(keep)
        self._items.extendleft(reversed(keep))

    async def close(self) -> None:
        """Write what is left, waiting at most CLOSE_WAIT_S for each of the last two writes."""
        await self._wait()
        self._retry_at = 0.0
        self.flush()
        await self._wait()

    async def _wait(self) -> None:
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, CLOSE_WAIT_S)
            except (TimeoutError, *REDIS_DOWN):
                pass
