"""The asr service: one streaming recognizer per call, claimed from ``sessions:asr``.

Caller audio comes from ``call:{id}:audio:in``; the call's end from ``call:{id}:events``. Partial
results go out as ``transcript.partial``. The end of the caller's turn is the asr's own decision
(:mod:`activecall.asr.turn`, docs/turns.md): every 20 ms frame goes through a frame VAD into a
:class:`TurnDetector`; at the first pause a judge (text cues, the Smart Turn model, the playbook's
expected answers) runs once in the thread pool beside the recognizer, and when the silence reaches
what the verdict asks for, the recognizer is finalised at once and ``transcript.final`` carries the
words with ``speech_end_ms``, ``decided_ts`` and ``eot``. Sound without words (a cough) of at least
``min_speech_ms`` gives one final with empty text. The media worker's ``speech.started``/``stopped``
events are not used to end turns.

The recognizer hears the caller's turns only: between turns the frames go through the VAD and the
detector and wait in a pre-roll of ``PREROLL_MS``; when a turn begins, the pre-roll and then every
frame until the turn's end are fed to the engine, and the final closes the engine's utterance. A
recognizer costs as much on a quiet line as on speech, or more (``bench/bench_asr.py`` prints both),
and a caller is silent most of a call, listening: gating cuts the asr's CPU by that share, and a worker
that takes a call over catches up on the silence it re-reads at the VAD's speed. The engine's times
(on the audio it was fed) are put back on the media clock before they go out.

Failover: the cursor is saved only between turns, so a worker that takes a call over re-reads the
audio of the turn in progress and still delivers its final transcript; the detector's clock is the
media clock of the frames, so it decides on the same frames as the first worker did. Utterances are
numbered in the final events; the number survives a takeover (it is kept with the cursor).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

from activecall.asr import metrics
from activecall.asr.engines import AsrEngine, AsrResult, AsrStream, create_asr_engine
from activecall.asr.turn.detector import AskJudge, TurnDetector, TurnEnd, TurnSettings
from activecall.asr.turn.judge import Judge, TurnContext, Verdict
from activecall.asr.turn.smart_turn import shared_model
from activecall.asr.turn.vad import FrameVad, create_frame_vad, silero_session
from activecall.bus import Entry
from activecall.config import AsrSettings
from activecall.contract import Role
from activecall.messages import AudioFrame, CallEnded, TranscriptFinal, TranscriptPartial
from activecall.playbook import Playbook, PlaybookError, open_playbook
from activecall.service import Runtime, SessionService
from activecall.sessions import SessionContext

log = logging.getLogger("activecall.asr")
T = TypeVar("T")

READ_COUNT = 50
READ_BLOCK_MS = 100
SLICE_MS = 100
FRAME_MS = 20
JUDGE_AUDIO_S = 8  # the Smart Turn model hears the last 8 s
# Audio that stops coming counts as silence once the gap is longer than the media worker's jitter.
GAP_SLACK_MS = 200
# Audio before a turn's first speech frame that the recognizer hears too: the VAD is late on soft onsets.
PREROLL_MS = 300
# 500 ms of 20 ms frames stay unsaved between utterances, for a takeover to re-hear a starting word.
CHECKPOINT_TAIL_FRAMES = 25


def _close_after(inflight: Future[Any] | None, stream: AsrStream) -> None:
    if inflight is not None:
        wait([inflight])
    stream.close()


def turn_settings(asr: AsrSettings, playbook: Playbook | None = None) -> tuple[TurnSettings, str]:
    """The detector's settings and the VAD name: ``[asr]`` with the playbook's ``turn:`` over it."""
    values: dict[str, Any] = {
        "turn_detector": asr.turn_detector,
        "vad": asr.vad,
        "pause_ms": asr.pause_ms,
        "complete_silence_ms": asr.complete_silence_ms,
        "incomplete_silence_ms": asr.incomplete_silence_ms,
        "max_silence_ms": asr.max_silence_ms,
        "endpoint_silence_ms": asr.endpoint_silence_ms,
        "preemptive": asr.preemptive,
    }
    base = dict(values)
    if playbook is not None:
        overrides = dataclasses.asdict(playbook.turn)
        values.update({k: v for k, v in overrides.items() if v is not None})

    def build(v: dict[str, Any]) -> TurnSettings:
        return TurnSettings(
            mode=v["turn_detector"],
            pause_ms=v["pause_ms"],
            complete_silence_ms=v["complete_silence_ms"],
            incomplete_silence_ms=v["incomplete_silence_ms"],
            max_silence_ms=v["max_silence_ms"],
            silence_ms=v["endpoint_silence_ms"],
            preemptive=bool(v["preemptive"]),
        )

    try:
        return build(values), str(values["vad"])
    except ValueError as exc:
        name = playbook.filename if playbook else ""
        log.warning("playbook turn settings unusable", extra={"playbook": name, "error": str(exc)})
        return build(base), str(base["vad"])


@dataclass
class Utterance:
    """What the recognizer has heard since the last final result."""

    number: int = 0
    heard_words: bool = False
    last_partial: str = ""
    entries: list[Entry] = field(default_factory=list)


class AsrService(SessionService):
    role = Role.ASR

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        settings = runtime.config.asr
        self.engine: AsrEngine = create_asr_engine(settings.engine, settings)
        self.executor = ThreadPoolExecutor(max_workers=max(1, settings.capacity), thread_name_prefix="asr")

    def session_capacity(self) -> int:
        return self.runtime.config.asr.capacity

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.warm_up)
        await super().start()

    def warm_up(self) -> None:
        self.engine.warm_up()
        settings = self.runtime.config.asr
        if settings.turn_detector == "smart_turn":
            shared_model()
        if settings.vad == "silero":
            silero_session()

    async def stop(self) -> None:
        await super().stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def playbook_for(self, playbook_name: str) -> Playbook | None:
        if not playbook_name:
            return None
        try:
            return open_playbook(playbook_name, self.runtime.config.playbooks.dirs)
        except PlaybookError as exc:
            log.warning("playbook unusable for asr", extra={"playbook": playbook_name, "error": str(exc)})
            return None

    async def handle(self, ctx: SessionContext) -> None:
        start = ctx.session.start
        loop = asyncio.get_running_loop()
        playbook = self.playbook_for(start.playbook)
        hints = list(playbook.asr.hints or []) if playbook else []
        stream = await loop.run_in_executor(self.executor, self.engine.open, start.sample_rate, hints or None)
        settings, vad_name = turn_settings(self.runtime.config.asr, playbook)
        try:
            judge = None
            if settings.mode != "silence":
                model = None
                if settings.mode == "smart_turn":
                    model = await loop.run_in_executor(self.executor, shared_model)
                judge = Judge(settings.mode, model, TurnContext.from_hints(hints))
            vad = await loop.run_in_executor(self.executor, create_frame_vad, vad_name, start.sample_rate)
        except BaseException:
            self.executor.submit(stream.close)
            raise
        call = CallRecognizer(self, ctx, stream, start.sample_rate, TurnDetector(settings), vad, judge)
        try:
            await call.run()
        finally:
            # A cancelled await leaves its engine call running in the pool: the stream is closed
            # after it, never beside it (the engines are not safe to call from two threads).
            inflight = call.inflight
            self.executor.submit(_close_after, inflight, stream)


class CallRecognizer:
    """The loop of one call: read audio and events, feed the engine and the turn detector, finalise
    the recognizer when the detector says the turn is over."""

    def __init__(
        self,
        service: AsrService,
        ctx: SessionContext,
        stream: AsrStream,
        sample_rate: int,
        detector: TurnDetector,
        vad: FrameVad,
        judge: Judge | None,
    ) -> None:
        self.service = service
        self.ctx = ctx
        self.stream = stream
        self.sample_rate = sample_rate
        self.detector = detector
        self.vad = vad
        self.judge = judge
        self.bus = ctx.bus
        self.keys = ctx.bus.keys
        self.utterance = Utterance(number=int(ctx.notes.get("utterance", "0")))
        self.frame_bytes = sample_rate * 2 * FRAME_MS // 1000
        self.slice_bytes = sample_rate * 2 * SLICE_MS // 1000
        self.history_bytes = sample_rate * 2 * JUDGE_AUDIO_S
        self.pending = bytearray()  # audio not yet fed to the engine
        self.preroll: deque[bytes] = deque(maxlen=PREROLL_MS // FRAME_MS)  # between turns
        self.hearing = False  # feeding the engine: from a turn's start (less the pre-roll) to its final
        self.fed_ms = 0  # audio fed to the engine so far (its clock)
        self.media_offset_ms = 0  # media clock less the engine's clock, for the turn being heard
        self.history = bytearray()  # at least the last JUDGE_AUDIO_S of audio, for the judge
        self.inflight: Future[Any] | None = None
        self.judging: tuple[int, Future[Verdict]] | None = None
        self.last_audio_at = time.monotonic()
        self.last_audio_end_ms = 0

    async def run(self) -> None:
        call_id = self.ctx.call_id
        audio_stream = self.keys.audio_in(call_id)
        streams = [audio_stream, self.keys.events(call_id)]
        while True:
            entries = await self.ctx.read(streams, count=READ_COUNT, block_ms=READ_BLOCK_MS)
            ended = False
            for entry in entries:
                message = entry.message
                self.utterance.entries.append(entry)
                if isinstance(message, AudioFrame):
                    await self.on_audio(message)
                elif isinstance(message, CallEnded):
                    ended = True
            if not any(e.stream == audio_stream for e in entries):
                await self.on_no_audio()
            if ended:
                await self.hangup()
                return
            if not self.detector.in_turn:
                await self.checkpoint()

    async def on_audio(self, message: AudioFrame) -> None:
        pcm = message.pcm
        for i in range(len(pcm) // self.frame_bytes):
            frame = pcm[i * self.frame_bytes : (i + 1) * self.frame_bytes]
            at_ms = message.at_ms + i * FRAME_MS
            self.history += frame
            speech = self.vad.is_speech(frame)
            event = self.detector.feed(speech, at_ms)
            self.hear(frame, at_ms)
            if event is None:
                event = await self.collect_verdict()
            await self.on_event(event)
            if len(self.pending) >= self.slice_bytes:
                await self.feed_pending()
        if len(self.history) > 2 * self.history_bytes:  # trimmed now and then, not moved on every frame
            del self.history[: len(self.history) - self.history_bytes]
        self.last_audio_at = time.monotonic()
        self.last_audio_end_ms = self.detector.position_ms

    def hear(self, frame: bytes, at_ms: int) -> None:
        """The frame goes to the engine while a turn is heard, else to the pre-roll."""
        if not self.hearing and self.detector.in_turn:
            self.hearing = True
            onset_ms = at_ms - FRAME_MS * len(self.preroll)
            self.media_offset_ms = onset_ms - (
                self.fed_ms + len(self.pending) * 1000 // (2 * self.sample_rate)
            )
            self.pending += b"".join(self.preroll)
            self.preroll.clear()
        if self.hearing:
            self.pending += frame
        else:
            self.preroll.append(frame)

    def to_media_ms(self, engine_ms: int) -> int:
        return engine_ms + self.media_offset_ms

    async def on_no_audio(self) -> None:
        """No audio in this read: a verdict may have come, and audio that stopped counts as silence."""
        await self.on_event(await self.collect_verdict())
        if self.detector.in_turn:
            gap_ms = int((time.monotonic() - self.last_audio_at) * 1000) - GAP_SLACK_MS
            if gap_ms > 0:
                await self.on_event(self.detector.advance(self.last_audio_end_ms + gap_ms))

    async def collect_verdict(self) -> TurnEnd | None:
        """Hand a finished verdict to the detector. Once the silence is long enough for the verdict to
        matter, wait for it: decisions must not depend on how fast the judge ran."""
        if self.judging is None:
            return None
        pause, future = self.judging
        if pause != self.detector.pause:
            self.judging = None  # speech resumed: this verdict is moot
            return None
        if not future.done() and self.detector.silence_ms < self.detector.settings.complete_silence_ms:
            return None
        verdict = await asyncio.wrap_future(future)
        self.judging = None
        metrics.TURN_VERDICTS.labels("finished" if verdict.finished else "unfinished").inc()
        return self.detector.answer(pause, verdict)

    async def on_event(self, event: AskJudge | TurnEnd | None) -> None:
        if isinstance(event, AskJudge):
            await self.ask_judge(event)
        elif isinstance(event, TurnEnd):
            await self.finalize(event, time.time())

    async def ask_judge(self, ask: AskJudge) -> None:
        await self.feed_pending()  # the freshest partial transcript
        assert self.judge is not None
        text = self.utterance.last_partial
        self.judging = (
            ask.pause,
            self.service.executor.submit(self.timed_judge, bytes(self.history[-self.history_bytes :]), text),
        )

    def timed_judge(self, pcm: bytes, text: str) -> Verdict:
        assert self.judge is not None
        started = time.perf_counter()
        verdict = self.judge(pcm, self.sample_rate, text)
        metrics.JUDGE_SECONDS.observe(time.perf_counter() - started)
        return verdict

    async def engine_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one call of the stream in the pool, remembering it until it ends."""
        self.inflight = self.service.executor.submit(fn, *args)
        return await asyncio.wrap_future(self.inflight)

    async def feed_pending(self) -> None:
        if self.pending:
            pcm = bytes(self.pending)
            self.pending.clear()
            await self.feed(pcm)

    async def feed(self, pcm: bytes) -> None:
        started = time.perf_counter()
        partials: list[AsrResult] = await self.engine_call(self.stream.feed, pcm)
        self.fed_ms += len(pcm) * 1000 // (2 * self.sample_rate)
        audio_s = len(pcm) / 2 / self.sample_rate
        metrics.AUDIO_SECONDS.inc(audio_s)
        metrics.DECODE_SECONDS.inc(time.perf_counter() - started)
        for result in partials:
            text = result.text.strip()
            if not text or text == self.utterance.last_partial:
                continue
            self.utterance.heard_words = True
            self.utterance.last_partial = text
            start_ms, end_ms = self.to_media_ms(result.start_ms), self.to_media_ms(result.end_ms)
            await self.bus.emit(
                self.ctx.call_id, TranscriptPartial(text=text, start_ms=start_ms, end_ms=end_ms)
            )

    async def hangup(self) -> None:
        await self.feed_pending()
        end = self.detector.hangup()
        if end is None and self.utterance.heard_words:
            position = self.detector.position_ms
            end = TurnEnd("hangup", position, position, position, 0)
        if end is not None:
            await self.finalize(end, time.time())

    async def finalize(self, end: TurnEnd, decided_ts: float) -> None:
        """The turn is over: force the recognizer's final now and say what was heard."""
        self.judging = None
        await self.feed_pending()
        u = self.utterance
        result: AsrResult | None = await self.engine_call(self.stream.finish)
        self.hearing = False
        text = result.text.strip() if result else ""
        metrics.TURN_ENDS.labels(end.eot).inc()
        metrics.TURN_SILENCE.observe((end.decided_ms - end.speech_end_ms) / 1000)
        if text or end.speech_ms >= self.detector.settings.min_speech_ms:
            u.number += 1
            await self.bus.emit(
                self.ctx.call_id,
                TranscriptFinal(
                    text=text,
                    start_ms=self.to_media_ms(result.start_ms) if result and text else 0,
                    end_ms=self.to_media_ms(result.end_ms) if result and text else 0,
                    confidence=result.confidence if result and text else 0.0,
                    utterance=u.number,
                    speech_end_ms=end.speech_end_ms,
                    decided_ts=decided_ts,
                    eot=end.eot,
                    p_finished=round(end.verdict.probability, 3) if end.verdict else None,
                    reply_at_ms=end.reply_at_ms,
                ),
            )
            metrics.FINALS.inc()
            metrics.FINAL_LATENCY.observe(max(0.0, time.time() - decided_ts))
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
