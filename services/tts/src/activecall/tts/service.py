"""The tts service: speech per call, sentence by sentence, claimed from ``sessions:tts``.

Text arrives on ``call:{id}:say`` as :class:`~activecall.messages.SayText` pieces tagged with a
``turn_id``; each piece is synthesized, resampled to the call's rate and appended to
``call:{id}:audio:out`` as :class:`~activecall.messages.AudioChunk` s. Chunk sequence numbers are
derived from the piece's own (``seq * 1000 + i``), so a worker that takes a call over and speaks a
piece again produces the same (turn_id, seq) pairs, which the media worker plays once.

A ``turn.cancelled`` or ``barge_in`` event drops the queued text of that turn and stops its synthesis.
A phrase cache keyed by (engine, voice, text, rate) makes repeated greetings free. Before the service
takes sessions, and whenever a playbook changes, the playbooks' fixed phrases are synthesised into it
and pinned there (:mod:`activecall.tts.presynthesis`), so even the first call's greeting is a hit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from activecall.audio import resample, trim_leading_silence
from activecall.bus import Entry
from activecall.contract import Role
from activecall.messages import AudioChunk, BargeIn, CallEnded, SaySynthesized, SayText, TurnCancelled
from activecall.service import Runtime, SessionService
from activecall.sessions import SessionContext
from activecall.tts import metrics
from activecall.tts.engines import TtsEngine, create_tts_engine
from activecall.tts.presynthesis import CacheKey, Presynthesizer
from activecall.tts.shared_phrases import SharedPhrases

log = logging.getLogger("activecall.tts")

CHUNK_MS = 200
SEQ_STRIDE = 1000
ENGINE_THREADS = 2


class PhraseCache:
    """A small LRU of synthesized phrases at a given rate, plus pinned entries (the playbooks' fixed
    phrases) that the LRU never evicts and that do not count against ``entries``."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[CacheKey, bytes] = OrderedDict()
        self._pinned: dict[CacheKey, bytes] = {}

    def get(self, key: CacheKey) -> bytes | None:
        value = self._pinned.get(key)
        if value is None:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
        metrics.CACHE.labels("miss" if value is None else "hit").inc()
        return value

    def peek(self, key: CacheKey) -> bytes | None:
        """The entry without counting a lookup or refreshing its place in the LRU."""
        value = self._pinned.get(key)
        return value if value is not None else self._items.get(key)

    def put(self, key: CacheKey, pcm: bytes) -> None:
        if self.entries <= 0 or key in self._pinned:
            return
        self._items[key] = pcm
        self._items.move_to_end(key)
        while len(self._items) > self.entries:
            self._items.popitem(last=False)

    def pin(self, key: CacheKey, pcm: bytes) -> None:
        self._items.pop(key, None)
        self._pinned[key] = pcm
        metrics.PINNED.set(len(self._pinned))

    def unpin(self, key: CacheKey) -> None:
        """Make a pinned entry an ordinary one again (the newest in the LRU)."""
        pcm = self._pinned.pop(key, None)
        metrics.PINNED.set(len(self._pinned))
        if pcm is not None:
            self.put(key, pcm)

    def pinned_keys(self) -> frozenset[CacheKey]:
        return frozenset(self._pinned)


class TtsService(SessionService):
    role = Role.TTS

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        settings = runtime.config.tts
        self.engine: TtsEngine = create_tts_engine(settings.engine, settings)
        self.engine_name = settings.engine
        self.voice = settings.voice
        self.cache = PhraseCache(settings.cache_entries)
        self.executor = ThreadPoolExecutor(max_workers=ENGINE_THREADS, thread_name_prefix="tts")
        self.presynthesizer: Presynthesizer | None = None
        if settings.presynthesize:
            self.presynthesizer = Presynthesizer(
                self.cache,
                self.cache_key,
                self.synthesize_at,
                runtime.config.playbooks.dirs,
                settings.presynthesize_max,
                shared=SharedPhrases(runtime.bus),
            )
        self._poller: asyncio.Task[None] | None = None

    def session_capacity(self) -> int:
        return self.runtime.config.tts.capacity

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.engine.warm_up)
        if self.presynthesizer is not None:
            # Before any session (the first call's greeting must not wait for the engine), on every
            # engine thread: no call needs them yet.
            await self.presynthesizer.refresh(workers=ENGINE_THREADS)
            self._poller = asyncio.create_task(self.presynthesizer.run(), name="tts-presynthesis")
        await super().start()

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        await super().stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def cache_key(self, text: str, rate: int) -> CacheKey:
        return (self.engine_name, self.voice, text, rate)

    async def speech(self, text: str, rate: int) -> bytes:
        """The text spoken at ``rate`` Hz, from the cache or the engine."""
        key = self.cache_key(text, rate)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        pcm = await self.synthesize_at(text, rate)
        self.cache.put(key, pcm)
        return pcm

    async def synthesize_at(self, text: str, rate: int) -> bytes:
        """The text spoken at ``rate`` Hz by the engine (no cache)."""
        started = time.perf_counter()
        native = await asyncio.get_running_loop().run_in_executor(self.executor, self._synthesize, text)
        pcm = trim_leading_silence(resample(native, self.engine.sample_rate, rate), rate)
        metrics.SYNTHESIS_SECONDS.inc(time.perf_counter() - started)
        metrics.AUDIO_SECONDS.inc(len(native) / 2 / self.engine.sample_rate)
        return pcm

    def _synthesize(self, text: str) -> bytes:
        return b"".join(self.engine.synthesize(text, self.voice or None))

    async def handle(self, ctx: SessionContext) -> None:
        await CallSpeaker(self, ctx).run()


class CallSpeaker:
    """One call: a reader that queues text and watches for cancellations, a speaker that synthesizes."""

    def __init__(self, service: TtsService, ctx: SessionContext) -> None:
        self.service = service
        self.ctx = ctx
        self.bus = ctx.bus
        self.rate = ctx.session.start.sample_rate or 8000
        self.queue: asyncio.Queue[Entry] = asyncio.Queue()
        self.cancelled: set[str] = set()
        self.speaking_turn = ""
        self.speaking: asyncio.Task[None] | None = None

    async def run(self) -> None:
        speaker = asyncio.create_task(self.speak_queued(), name=f"tts-speaker-{self.ctx.call_id}")
        try:
            await self.read()
        finally:
            speaker.cancel()
            await asyncio.gather(speaker, return_exceptions=True)

    async def read(self) -> None:
        call_id = self.ctx.call_id
        streams = [self.bus.keys.say(call_id), self.bus.keys.events(call_id)]
        while True:
            for entry in await self.ctx.read(streams, count=50, block_ms=500):
                message = entry.message
                if isinstance(message, SayText):
                    self.queue.put_nowait(entry)
                    continue
                self.ctx.processed(entry)
                if isinstance(message, TurnCancelled | BargeIn):
                    self.cancel(message.turn_id)
                elif isinstance(message, CallEnded):
                    await self.ctx.save()
                    return

    def cancel(self, turn_id: str) -> None:
        self.cancelled.add(turn_id)
        if self.speaking_turn == turn_id and self.speaking is not None:
            self.speaking.cancel()

    async def speak_queued(self) -> None:
        while True:
            entry = await self.queue.get()
            message = entry.message
            assert isinstance(message, SayText)
            if message.turn_id not in self.cancelled:
                self.speaking_turn = message.turn_id
                task = self.speaking = asyncio.create_task(self.speak(message))
                try:
                    await asyncio.wait(
                        {task}
                    )  # unlike await, wait() does not raise when the turn is cancelled
                finally:
                    task.cancel()
                    self.speaking = None
                    self.speaking_turn = ""
                if task.cancelled():
                    metrics.TURNS_CANCELLED.inc()
                elif task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            self.ctx.processed(entry)
            await self.ctx.save()

    async def speak(self, message: SayText) -> None:
        text = message.text.strip()
        pcm = await self.service.speech(text, self.rate) if text else b""
        chunk_bytes = self.rate * 2 * CHUNK_MS // 1000
        pieces = [pcm[i : i + chunk_bytes] for i in range(0, len(pcm), chunk_bytes)] or [b""]
        out = self.bus.keys.audio_out(self.ctx.call_id)
        if text:
            duration_ms = len(pcm) * 1000 // (2 * self.rate)
            synthesized = SaySynthesized(
                turn_id=message.turn_id, seq=message.seq, duration_ms=duration_ms, chars=len(text)
            )
            await self.bus.emit(self.ctx.call_id, synthesized)
        for i, piece in enumerate(pieces):
            if message.turn_id in self.cancelled:
                return
            chunk = AudioChunk(
                call_id=self.ctx.call_id,
                turn_id=message.turn_id,
                seq=message.seq * SEQ_STRIDE + i,
                pcm=piece,
                sample_rate=self.rate,
                last=message.last and i == len(pieces) - 1,
                interruptible=message.interruptible,
                not_before_ms=message.not_before_ms if i == 0 else 0,
            )
            await self.bus.publish(out, chunk, maxlen=self.bus.settings.audio_maxlen)
            if i == 0 and message.ts:
                metrics.TIME_TO_FIRST_AUDIO.observe(max(0.0, time.time() - message.ts))
