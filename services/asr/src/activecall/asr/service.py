"""The asr service: one streaming recognizer per call, claimed from ``sessions:asr``.

Caller audio comes from ``call:{id}:audio:in``; the media worker's VAD events and the call's end
come from ``call:{id}:events``. Partial results go out as ``transcript.partial``; an utterance ends
with ``transcript.final`` when the media worker reports the end of speech or the engine has heard
``endpoint_silence_ms`` of silence after its last words.

Failover: the cursor is saved only between utterances, so a worker that takes a call over re-reads
the audio of the utterance in progress and still delivers its final transcript. Utterances are
numbered in the final events; the number survives a takeover (it is kept with the cursor).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from activecall.asr import metrics
from activecall.asr.engines import AsrEngine, AsrResult, AsrStream, create_asr_engine
from activecall.bus import Entry
from activecall.messages import (
    AudioFrame,
    CallEnded,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
)
from activecall.playbook import PlaybookError, open_playbook
from activecall.service import Runtime, SessionService
from activecall.sessions import SessionContext

log = logging.getLogger("activecall.asr")
T = TypeVar("T")

READ_COUNT = 50
READ_BLOCK_MS = 100
SLICE_MS = 100
QUIET_RMS = 300.0  # about -40 dBFS: below this a 20 ms frame counts as silence for endpointing
# 500 ms of 20 ms frames stay unsaved between utterances, for a takeover to re-hear a starting word.
CHECKPOINT_TAIL_FRAMES = 25


def _close_after(inflight: Future[Any] | None, stream: AsrStream) -> None:
    if inflight is not None:
        wait([inflight])
    stream.close()


@dataclass
class Utterance:
    """What the recognizer has heard since the last final result."""

    number: int = 0
    audio_ms: int = 0
    heard_words: bool = False
    last_partial: str = ""
    last_change_ms: int = 0
    quiet_ms: int = 0  # trailing audio below the speech level
    speaking: bool = False
    speech_stopped_at: float = 0.0
    entries: list[Entry] = field(default_factory=list)


class AsrService(SessionService):
    role = "asr"

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        settings = runtime.config.asr
        self.engine: AsrEngine = create_asr_engine(settings.engine, settings)
        self.executor = ThreadPoolExecutor(max_workers=max(1, settings.capacity), thread_name_prefix="asr")

    def session_capacity(self) -> int:
        return self.runtime.config.asr.capacity

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.engine.warm_up)
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def hints_for(self, playbook_name: str) -> list[str]:
        if not playbook_name:
            return []
        try:
            playbook = open_playbook(playbook_name, self.runtime.config.playbooks.dirs)
        except PlaybookError as exc:
            log.warning("playbook unusable for hints", extra={"playbook": playbook_name, "error": str(exc)})
            return []
        return list(playbook.asr.hints or [])

    async def handle(self, ctx: SessionContext) -> None:
        start = ctx.session.start
        loop = asyncio.get_running_loop()
        hints = self.hints_for(start.playbook)
        stream = await loop.run_in_executor(self.executor, self.engine.open, start.sample_rate, hints or None)
        call = CallRecognizer(self, ctx, stream, start.sample_rate)
        try:
            await call.run()
        finally:
            # A cancelled await leaves its engine call running in the pool: the stream is closed
            # after it, never beside it (the engines are not safe to call from two threads).
            inflight = call.inflight
            self.executor.submit(_close_after, inflight, stream)


class CallRecognizer:
    """The loop of one call: read audio and events, feed the engine, decide when an utterance ends."""

    def __init__(self, service: AsrService, ctx: SessionContext, stream: AsrStream, sample_rate: int) -> None:
        self.service = service
        self.ctx = ctx
        self.stream = stream
        self.sample_rate = sample_rate
        self.bus = ctx.bus
        self.keys = ctx.bus.keys
        self.silence_ms = service.runtime.config.asr.endpoint_silence_ms
        self.utterance = Utterance(number=int(ctx.notes.get("utterance", "0")))
        self.loop = asyncio.get_running_loop()
        self.slice_bytes = sample_rate * 2 * SLICE_MS // 1000
        self.inflight: Future[Any] | None = None

    async def run(self) -> None:
        call_id = self.ctx.call_id
        streams = [self.keys.audio_in(call_id), self.keys.events(call_id)]
        while True:
            entries = await self.ctx.read(streams, count=READ_COUNT, block_ms=READ_BLOCK_MS)
            pcm = bytearray()
            ended = False
            for entry in entries:
                message = entry.message
                self.utterance.entries.append(entry)
                if isinstance(message, AudioFrame):
                    pcm += message.pcm
                    if len(pcm) >= self.slice_bytes:  # decide endpoints at a fine grain, however big the read
                        await self.feed(bytes(pcm))
                        pcm.clear()
                        if self.utterance_over():
                            await self.finalize()
                elif isinstance(message, SpeechStarted):
                    self.utterance.speaking = True
                elif isinstance(message, SpeechStopped):
                    self.utterance.speaking = False
                    self.utterance.speech_stopped_at = time.monotonic()
                elif isinstance(message, CallEnded):
                    ended = True
            if pcm:
                await self.feed(bytes(pcm))
            if ended or self.utterance_over():
                await self.finalize()
            elif not (self.utterance.heard_words or self.utterance.speaking):
                await self.checkpoint()
            if ended:
                return

    async def engine_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one call of the stream in the pool, remembering it until it ends."""
        self.inflight = self.service.executor.submit(fn, *args)
        return await asyncio.wrap_future(self.inflight)

    async def feed(self, pcm: bytes) -> None:
        started = time.perf_counter()
        partials: list[AsrResult] = await self.engine_call(self.stream.feed, pcm)
        self.track_quiet(pcm)
        audio_s = len(pcm) / 2 / self.sample_rate
        metrics.AUDIO_SECONDS.inc(audio_s)
        metrics.DECODE_SECONDS.inc(time.perf_counter() - started)
        self.utterance.audio_ms += int(audio_s * 1000)
        for result in partials:
            text = result.text.strip()
            if not text or text == self.utterance.last_partial:
                continue
            self.utterance.heard_words = True
            self.utterance.last_partial = text
            self.utterance.last_change_ms = self.utterance.audio_ms
            await self.bus.emit(
                self.ctx.call_id, TranscriptPartial(text=text, start_ms=result.start_ms, end_ms=result.end_ms)
            )

    def track_quiet(self, pcm: bytes) -> None:
        frame = self.sample_rate // 50  # samples in 20 ms
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32)
        u = self.utterance
        for start in range(0, len(samples), frame):
            chunk = samples[start : start + frame]
            loud = chunk.size and float(np.sqrt(np.mean(chunk * chunk))) > QUIET_RMS
            u.quiet_ms = 0 if loud else u.quiet_ms + chunk.size * 1000 // self.sample_rate

    def utterance_over(self) -> bool:
        """The media worker's VAD said speech stopped, or the engine heard nothing new while the
        audio stayed quiet for ``endpoint_silence_ms`` (a pause in decoding alone is not the end)."""
        u = self.utterance
        if not u.heard_words or u.speaking:
            return False
        if u.speech_stopped_at:
            return True
        quiet = min(u.quiet_ms, u.audio_ms - u.last_change_ms)
        return quiet >= self.silence_ms

    async def finalize(self) -> None:
        u = self.utterance
        stopped_at = u.speech_stopped_at
        result: AsrResult | None = await self.engine_call(self.stream.finish)
        text = result.text.strip() if result else ""
        if text:
            u.number += 1
            await self.bus.emit(
                self.ctx.call_id,
                TranscriptFinal(
                    text=text,
                    start_ms=result.start_ms if result else 0,
                    end_ms=result.end_ms if result else 0,
                    confidence=result.confidence if result else 0.0,
                    utterance=u.number,
                ),
            )
            metrics.FINALS.inc()
            if stopped_at:
                metrics.FINAL_LATENCY.observe(time.monotonic() - stopped_at)
        self.utterance = Utterance(number=u.number)
        for entry in u.entries:
            self.ctx.processed(entry)
        await self.save()

    async def checkpoint(self) -> None:
        """Between utterances, move the cursor past what was read, keeping the last moments of audio:
        speech may have begun in them before the VAD said so."""
        entries = self.utterance.entries
        audio_stream = self.keys.audio_in(self.ctx.call_id)
        audio_positions = [i for i, e in enumerate(entries) if e.stream == audio_stream]
        keep_from = (
            audio_positions[-CHECKPOINT_TAIL_FRAMES] if len(audio_positions) >= CHECKPOINT_TAIL_FRAMES else 0
        )
        for entry in entries[:keep_from]:
            self.ctx.processed(entry)
        for entry in entries[keep_from:]:
            if entry.stream != audio_stream:
                self.ctx.processed(entry)
        self.utterance.entries = [e for e in entries[keep_from:] if e.stream == audio_stream]
        await self.save()

    async def save(self) -> None:
        self.ctx.notes["utterance"] = str(self.utterance.number)
        await self.ctx.save()
