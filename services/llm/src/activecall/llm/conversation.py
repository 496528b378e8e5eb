"""The conversation of one call, from the greeting to ``call.ended``.

The session reads the call's events stream from its cursor and acts on it:

- ``transcript.final``: an answer from the provider; ``dtmf``: the playbook's key actions, else the
  provider. These are answered one at a time, in order, each as a turn (:mod:`activecall.llm.turns`).
  One caller turn gets one reply: finals that arrive before the reply was heard are merged into one
  request, and a reply not yet heard when the caller speaks again is taken back and merged with what
  follows (:meth:`Conversation._hold`).
- ``playback.paused``: the caller spoke over the agent; their words decide whether it goes on
  (``playback.resume``: a backchannel or a noise) or stops (``playback.stop``, then ``barge_in``)
  (:mod:`activecall.llm.floor`).
- ``barge_in``: the turn being said is cancelled (``turn.cancelled``) and its text in the history is
  cut to what the caller heard (:mod:`activecall.llm.truncation`).
- ``playback.started``: an answer's stages are timed (``turn.timings``, :mod:`activecall.llm.timings`).
- ``playback.finished``, ``speech.started``/``stopped``: silence is timed for follow-ups; a hangup
  or transfer decided in a turn is carried out once that turn has played.
- ``say.synthesized``: how long each piece of speech lasts, for barge-in cuts.
- ``call.ended``: the session ends.

Idempotence after a takeover: a turn is committed (history, state and the answered event id) in one
MULTI before the event's position may enter the cursor, and the cursor only moves over events that
are completely handled. A resumed session skips events already answered, and a turn that was cut
short by the death of its worker keeps its id, so pieces already sent are not sent again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from activecall.bus import Entry, with_reconnect
from activecall.config import Config
from activecall.contract import EndReason, Role
from activecall.llm import metrics
from activecall.llm.floor import Backchannels, Verdict
from activecall.llm.followup import SilenceClock
from activecall.llm.history import CallState, ConversationStore, EndAction, Message, request_messages
from activecall.llm.providers import ModelRequest, ModelSettings, Providers, resolve_provider_name
from activecall.llm.providers.base import ToolCall
from activecall.llm.providers.scripted import rule_action
from activecall.llm.timings import TurnTimer
from activecall.llm.tools import ToolRunner, tool_definitions
from activecall.llm.truncation import WORDS_PER_SECOND, cut_turn
from activecall.llm.turns import Turn, TurnRunner
from activecall.messages import (
    BargeIn,
    BargeInPolicy,
    CallEnded,
    CallError,
    DtmfReceived,
    Hangup,
    MediaMoved,
    PlaybackFinished,
    PlaybackPaused,
    PlaybackResumed,
    PlaybackStarted,
    ResumePlayback,
    SaySynthesized,
    SpeechStarted,
    SpeechStopped,
    StopPlayback,
    TranscriptFinal,
    TranscriptPartial,
    Transfer,
    TransferRequested,
    TurnCancelled,
    TurnTimings,
)
from activecall.messages import (
    Message as BusMessage,
)
from activecall.playbook import (
    DEFAULT_BACKCHANNELS,
    DtmfAction,
    PlaybookError,
    ScriptRule,
    call_variables,
    open_playbook,
)
from activecall.sessions import SessionContext
from activecall.store import CallStore
from activecall.tasks import stop_tasks

log = logging.getLogger("activecall.llm.conversation")

ROLE: Final = Role.LLM
# After our hangup, how long to wait for the edge's call.ended before giving the session up.
HANGUP_WAIT_S: Final = 30.0
READ_BLOCK_MS: Final = 1000
# A reply taken back because the caller spoke again is said after all if no words follow this long
# after their speech stopped.
HOLD_RELEASE_S: Final = 2.0
TIMERS_KEPT: Final = 32
_CALL_FIELDS: Final = ("caller", "callee", "direction", "call_id")
# The playbook's names for the prompts (``interruption.uninterruptible``), by kind of work.
_PROMPTS: Final = {"utterance": "answer", "dtmf": "dtmf", "greeting": "greeting", "follow_up": "follow_up"}


@dataclass(frozen=True)
class Work:
    """Something to answer: ``kind`` is greeting, utterance, dtmf, follow_up or final. ``merged``
    are earlier caller events answered together with ``entry``; ``retry`` counts how often a reply to
    it was taken back (each try is a turn of its own)."""

    kind: str
    entry: Entry | None = None
    text: str = ""
    merged: tuple[Entry, ...] = ()
    retry: int = 0

    @property
    def entries(self) -> tuple[Entry, ...]:
        return (*self.merged, self.entry) if self.entry is not None else self.merged


class CursorTracker:
    """Moves the session's cursor over events only when they and every event before them are done."""

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self._open: dict[str, tuple[Entry, bool]] = {}

    def add(self, entry: Entry) -> None:
        self._open[entry.id] = (entry, False)

    def done(self, entry_id: str) -> None:
        if entry_id in self._open:
            self._open[entry_id] = (self._open[entry_id][0], True)

    async def save(self) -> None:
        last: Entry | None = None
        while self._open:
            entry_id, (entry, done) = next(iter(self._open.items()))
            if not done:
                break
            del self._open[entry_id]
            last = entry
        if last is not None:
            self.ctx.processed(last)
            await with_reconnect(self.ctx.save, "cursor")


class Conversation:
    """One call's session in the llm service."""

    def __init__(self, ctx: SessionContext, config: Config, providers: Providers) -> None:
        self.ctx = ctx
        self.bus = ctx.bus
        self.call_id = ctx.call_id
        self.config = config
        self.providers = providers
        self.store = ConversationStore(self.bus, self.call_id)
        self.calls = CallStore(self.bus.redis, self.bus.keys, self.bus.settings)
        self.cursor = CursorTracker(ctx)
        self.inbox: asyncio.Queue[Entry | Turn] = asyncio.Queue()
        self.work: deque[Work] = deque()
        self.current: Turn | None = None
        self.held: Work | None = None  # a reply taken back while the caller speaks on
        self.unheard: tuple[Turn, Work] | None = None  # the last answer, until its audio is heard
        self.held_until: float | None = None
        self.paused: str | None = None  # the turn the media worker paused for caller speech
        self.paused_at = 0.0
        self.resumed_over: str | None = None  # resumed at the end of speech whose final is to come
        self.partial = ""  # the recognizer's words of the caller's speech in progress
        self.speech_started_ms = 0
        self.speech_ms = 0  # how long the caller's last stretch of speech lasted
        self.timers: dict[str, TurnTimer] = {}
        self.history: list[Message] = []
        self.state = CallState()
        self.answered: set[str] = set()
        self.durations: dict[str, dict[int, int]] = {}
        self.finished = False
        self.end_due: float | None = None
        self.end_wait_until: float | None = None
        self.max_end: float | None = None

    # ---------------------------------------------------------------- set-up

    async def run(self) -> None:
        start = self.ctx.session.start
        name = start.playbook or self.config.handler.default
        try:
            self.playbook = await asyncio.to_thread(open_playbook, name, self.config.playbooks.dirs)
        except PlaybookError as exc:
            await self._fail(f"playbook {name}: {exc}")
            return
        self.history, self.state, self.answered = await with_reconnect(self.store.load, "history")
        self._set_up(start.variables)
        await self._resume()
        reader = asyncio.create_task(self._read(), name=f"llm-events-{self.call_id}")
        try:
            await self._loop()
        finally:
            await stop_tasks([reader, self.current.task if self.current else None])
        await with_reconnect(self.store.finish, "history")

    def _set_up(self, session_variables: dict[str, str]) -> None:
        llm, chosen = self.config.llm, self.playbook.llm
        name = resolve_provider_name(llm.provider, chosen.provider, llm.api_key)
        self.provider = self.providers.get(name)
        self.settings = ModelSettings(
            model=chosen.model or llm.model,
            max_tokens=chosen.max_tokens or llm.max_tokens,
            temperature=chosen.temperature if chosen.temperature is not None else llm.temperature,
        )
        headers = {k: v for k, v in session_variables.items() if k not in _CALL_FIELDS}
        self.call_vars = call_variables(
            caller=session_variables.get("caller", ""),
            callee=session_variables.get("callee", ""),
            call_id=self.call_id,
            direction=session_variables.get("direction", ""),
            headers=headers,
        )
        self.words_per_s = WORDS_PER_SECOND * (self.playbook.tts.speed or 1.0)
        self.tools = ToolRunner(self.bus, self.call_id, self.playbook, self.state)
        self.tool_specs = tool_definitions(self.playbook)
        self.runner = TurnRunner(
            self.bus, self.call_id, self.provider, self.tools, self._request, self.ctx.session.taken_over
        )
        self.clock = SilenceClock(self.playbook.follow_up.timeout_s if self.playbook.follow_up else 0.0)
        backchannels = self.playbook.interruption.backchannels
        self.backchannels = Backchannels(DEFAULT_BACKCHANNELS if backchannels is None else backchannels)
        log.info(
            "conversation started",
            extra={"call_id": self.call_id, "playbook": self.playbook.filename, "provider": name},
        )

    async def _resume(self) -> None:
        now = self._now()
        record = await self.calls.get(self.call_id)
        if record is not None and record.media_worker:
            await self._send_barge_in_policy(record.media_worker)
        if not self.state.started_at:
            self.state.started_at = record.answered if record and record.answered else time.time()
        if self.playbook.max_duration_s:
            remaining = self.state.started_at + self.playbook.max_duration_s - time.time()
            self.max_end = now + max(0.0, remaining)
        if not self.state.greeted:
            self.work.append(Work("greeting"))
        else:
            self.clock.start(now)
        if self.state.end_sent:
            self.end_wait_until = now + HANGUP_WAIT_S
        elif self.state.pending_end is not None:
            self.end_due = now  # decided by a worker that died before carrying it out

    async def _send_barge_in_policy(self, media_worker: str) -> None:
        """The playbook's ``interruption`` to the media worker, which cuts turns itself (no bus hop)."""
        policy = self.playbook.interruption
        message = BargeInPolicy(
            call_id=self.call_id,
            enabled=policy.enabled,
            guard_ms=-1 if policy.guard_ms is None else policy.guard_ms,
            min_speech_ms=-1 if policy.min_speech_ms is None else policy.min_speech_ms,
        )
        await self.bus.publish(self.bus.keys.media_control(media_worker), message)

    # ---------------------------------------------------------------- the loop

    async def _read(self) -> None:
        stream = self.bus.keys.events(self.call_id)

        async def read() -> list[Entry]:
            return await self.ctx.read([stream], count=100, block_ms=READ_BLOCK_MS)

        while True:
            for entry in await with_reconnect(read, "events"):
                self.inbox.put_nowait(entry)

    async def _loop(self) -> None:
        task = asyncio.current_task()
        while not self.finished:
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # a cancellation redis-py swallowed
            self._start_next()
            item = await self._next_item()
            if item is None:
                await self._on_timers()
            elif isinstance(item, Turn):
                await self._turn_done(item)
            else:
                await self._on_entry(item)
            await self.cursor.save()

    async def _next_item(self) -> Entry | Turn | None:
        deadline = self._next_deadline()
        try:
            async with asyncio.timeout_at(deadline):
                return await self.inbox.get()
        except TimeoutError:
            return None

    def _next_deadline(self) -> float | None:
        candidates = [
            self.end_due,
            self.end_wait_until,
            None if self.state.end_sent else self.max_end,
            self.held_until,
        ]
        if self.playbook.follow_up and self._idle():
            candidates.append(self.clock.due_at())
        times = [t for t in candidates if t is not None]
        return min(times) if times else None

    def _idle(self) -> bool:
        return self.current is None and not self.work and self.held is None and not self._ending()

    def _ending(self) -> bool:
        return self.state.pending_end is not None or self.state.end_sent

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # ---------------------------------------------------------------- events

    async def _on_entry(self, entry: Entry) -> None:
        self.cursor.add(entry)
        message = entry.message
        if isinstance(message, TranscriptFinal):
            if await self._on_final(entry, message):
                await self._on_caller_input(entry, message)
            return
        if isinstance(message, DtmfReceived):
            await self._on_caller_input(entry, message)
            return
        if isinstance(message, PlaybackStarted | PlaybackPaused | BargeIn | PlaybackFinished):
            self._heard(message.turn_id)
        if isinstance(message, BargeIn):
            self._playback_over(message.turn_id)
            await self._barge_in(message)
        elif isinstance(message, PlaybackFinished):
            self._playback_over(message.turn_id)
            await self._playback_finished(message)
        elif isinstance(message, SpeechStarted):
            await self._caller_started(message)
        elif isinstance(message, SpeechStopped):
            await self._caller_stopped(message)
        elif isinstance(message, TranscriptPartial):
            await self._on_partial(message)
        elif isinstance(message, PlaybackPaused):
            self.paused, self.paused_at = message.turn_id, time.monotonic()
        elif isinstance(message, PlaybackResumed):
            self.paused = None
        elif isinstance(message, SaySynthesized):
            self.durations.setdefault(message.turn_id, {})[message.seq] = message.duration_ms
            timer = self.timers.get(message.turn_id)
            if timer is not None and message.seq == 0:
                timer.mark("tts_first_audio", message.ts)
        elif isinstance(message, PlaybackStarted):
            await self._record_playback(message)
        elif isinstance(message, MediaMoved):
            # The new leg starts from the worker's defaults: the playbook's policy goes there again.
            await self._send_barge_in_policy(message.to_worker)
        elif isinstance(message, CallEnded):
            self.finished = True
        self.cursor.done(entry.id)

    async def _on_caller_input(self, entry: Entry, message: TranscriptFinal | DtmfReceived) -> None:
        text = message.text.strip() if isinstance(message, TranscriptFinal) else message.digit.strip()
        if entry.id in self.answered or not text or self._ending():
            self.cursor.done(entry.id)
            return
        self.state.follow_ups = 0
        self.clock.busy()
        if isinstance(message, DtmfReceived):
            self.work.append(Work("dtmf", entry, text))
            return
        # One caller turn, one reply: what the caller said before the reply was heard joins it.
        earlier = await self._take_back_unheard()
        if earlier is not None:
            self.work.append(Work("utterance", entry, f"{earlier.text} {text}", earlier.entries))
        else:
            self.work.append(Work("utterance", entry, text))

    async def _record_playback(self, message: PlaybackStarted) -> None:
        """The call record's timings: when the agent was first heard, and each answer's stages."""
        if message.turn_id == "greeting":
            # The caller's dead air before the greeting: from the answer (the edge's clock) to the
            # greeting's first packet (the media worker's).
            heard = message.ts or time.time()
            wait = max(0.0, heard - self.state.started_at) if self.state.started_at else 0.0
            await self.calls.set_timings(self.call_id, {"first_audio": heard, "greeting_wait": wait})
        timer = self.timers.pop(message.turn_id, None)
        if timer is None or not message.latency_ms:
            return
        stages = timer.stages(message.ts or time.time(), message.latency_ms)
        for stage, ms in stages.items():
            metrics.TURN_STAGES.labels(stage).observe(ms / 1000)
        await self._emit(TurnTimings(turn_id=message.turn_id, kind=timer.kind, stages=stages))
        timings = {f"turn:{message.turn_id}:{stage}": ms / 1000 for stage, ms in stages.items()}
        timings[f"turn_latency:{message.turn_id}"] = message.latency_ms / 1000
        await self.calls.set_timings(self.call_id, timings)

    # ---------------------------------------------------------------- the floor

    async def _take_back_unheard(self) -> Work | None:
        """The caller's earlier words whose reply has not been heard yet: a held reply, a queued one,
        or the last answer while none of its audio has reached the caller (it is taken back)."""
        if self.held is not None:
            earlier, self.held, self.held_until = self.held, None, None
            return earlier
        queued = [w for w in self.work if w.kind == "utterance"]
        if queued:
            self.work.remove(queued[-1])
            return queued[-1]
        if self.unheard is None:
            return None
        turn, work = self.unheard
        await self._withdraw(turn)
        return work

    async def _withdraw(self, turn: Turn) -> None:
        """Take back a reply the caller has not heard: its task stops, the tts and the media worker
        drop what they have of it, and what it committed leaves the history and the transcript."""
        self.unheard = None
        turn.withdrawn = True
        if turn.task is not None:
            turn.task.cancel()
        self.timers.pop(turn.turn_id, None)
        end = self.state.pending_end
        if end is not None and end.turn_id == turn.turn_id:
            self.state.pending_end = None  # decided on words that are answered again, with what followed
        await self._emit(TurnCancelled(turn_id=turn.turn_id, reason="withdrawn"))
        await self._media_command(StopPlayback(turn_id=turn.turn_id))
        if turn.committed:
            kept = [m for m in self.history if m.get("turn_id") != turn.turn_id]
            taken = [m for m in self.history if m.get("turn_id") == turn.turn_id]
            await with_reconnect(lambda: self.store.rewrite(kept, self.state, turn.entry_ids), "history")
            await self.calls.drop_transcript_tail(self.call_id, transcript_lines(taken))
            self.history = kept
            self.answered.difference_update(turn.entry_ids)
        metrics.WITHDRAWN_REPLIES.inc()

    async def _caller_started(self, message: SpeechStarted) -> None:
        self.clock.caller_started()
        self.partial = ""
        self.speech_started_ms = message.at_ms
        self.held_until = None
        if self.unheard is not None and self.held is None:
            work = self.unheard[1]
            await self._withdraw(self.unheard[0])  # the caller goes on: the reply waits for the rest
            self.held = work

    async def _caller_stopped(self, message: SpeechStopped) -> None:
        self.clock.caller_stopped(self._now())
        if self.held is not None:
            self.held_until = self._now() + HOLD_RELEASE_S
        self.speech_ms = message.at_ms - self.speech_started_ms
        if self.paused is not None:
            await self._decide(self.paused, self.partial)

    async def _on_partial(self, message: TranscriptPartial) -> None:
        self.partial = message.text
        if self.paused is None:
            return
        speech_ms = int((time.monotonic() - self.paused_at) * 1000)
        if self.backchannels.judge(message.text, speech_ms, final=False) is Verdict.INTERRUPTING:
            await self._media_command(StopPlayback(turn_id=self.paused, reason="barge_in"))

    async def _on_final(self, entry: Entry, message: TranscriptFinal) -> bool:
        """The floor when a caller's turn ends; False when the final needs no answer (a backchannel
        or a noise over the agent, or a noise alone)."""
        text = message.text.strip()
        self.partial = ""
        # Speech over the agent: a paused turn, or one resumed when that speech stopped.
        over, self.resumed_over = self.paused or self.resumed_over, None
        listening = over is not None and await self._decide(over, text)
        if text and not listening:
            return True
        if self.held is not None and not text:
            self._release_held()
        self.cursor.done(entry.id)
        return False

    async def _decide(self, turn_id: str, text: str) -> bool:
        """The caller's speech over a turn has ended: go on (True) or stop it (False)."""
        verdict = self.backchannels.judge(text, self.speech_ms, final=True)
        log.info(
            "caller speech over the agent",
            extra={"call_id": self.call_id, "turn_id": turn_id, "text": text, "speech_ms": self.speech_ms,
                   "verdict": verdict.value},
        )  # fmt: skip
        if verdict is Verdict.LISTENING:
            if turn_id == self.paused:
                await self._media_command(ResumePlayback(turn_id=turn_id))
                self.resumed_over = turn_id  # the final of this speech may still prove it wrong
            return True
        await self._media_command(StopPlayback(turn_id=turn_id, reason="barge_in"))
        return False

    def _release_held(self) -> None:
        """No words followed: the reply taken back is said after all (as a turn of its own)."""
        held, self.held, self.held_until = self.held, None, None
        if held is not None:
            self.work.appendleft(Work(held.kind, held.entry, held.text, held.merged, held.retry + 1))

    def _heard(self, turn_id: str) -> None:
        """Audio of the turn reached the caller: it can no longer be taken back."""
        if self.unheard is not None and self.unheard[0].turn_id == turn_id:
            self.unheard = None

    def _playback_over(self, turn_id: str) -> None:
        if self.paused == turn_id:
            self.paused = None
        self.timers.pop(turn_id, None)

    async def _media_command(self, message: BusMessage) -> None:
        """A command to the call's media worker (read from the call record: a leg may have moved)."""
        record = await self.calls.get(self.call_id)
        if record is None or not record.media_worker:
            return
        message.call_id = self.call_id
        await with_reconnect(
            lambda: self.bus.publish(self.bus.keys.media_control(record.media_worker), message), message.TYPE
        )

    async def _playback_finished(self, message: PlaybackFinished) -> None:
        self.clock.playback_finished(message.turn_id, self._now())
        end = self.state.pending_end
        if end is not None and not self.state.end_sent and end.turn_id == message.turn_id:
            await self._end_call()

    async def _on_timers(self) -> None:
        now = self._now()
        if self.end_wait_until is not None and now >= self.end_wait_until:
            log.warning("no call.ended after hangup; ending the session", extra={"call_id": self.call_id})
            self.finished = True
        elif self.max_end is not None and now >= self.max_end and not self.state.end_sent:
            self.max_end = None
            await self._stop_current_turn()
            self.state.pending_end = EndAction("hangup", reason=EndReason.MAX_DURATION)
            await self._end_call()
        elif self.end_due is not None and now >= self.end_due:
            await self._end_call()
        elif self.held_until is not None and now >= self.held_until:
            self._release_held()
        else:
            due = self.clock.due_at()
            if self._idle() and due is not None and now >= due:
                self._follow_up()

    # ---------------------------------------------------------------- turns

    def _start_next(self) -> None:
        if self.current is not None or not self.work or self.finished:
            return
        work = self.work.popleft()
        turn = Turn(self._turn_id(work), work.kind, work.entry.id if work.entry else None)
        turn.merged_ids = tuple(e.id for e in work.merged)
        turn.interruptible = (
            _PROMPTS.get(work.kind, work.kind) not in self.playbook.interruption.uninterruptible
        )
        if work.entry is not None:
            turn.timer = self._timer(work.entry)
            if isinstance(work.entry.message, TranscriptFinal):
                turn.not_before_ms = work.entry.message.reply_at_ms
            self.timers[turn.turn_id] = turn.timer
            while len(self.timers) > TIMERS_KEPT:
                self.timers.pop(next(iter(self.timers)))
        turn.task = asyncio.create_task(self._run_turn(turn, work), name=f"llm-turn-{self.call_id}")
        turn.task.add_done_callback(lambda _: self.inbox.put_nowait(turn))
        self.current = turn
        self.unheard = (turn, work) if work.kind == "utterance" else None
        self.clock.busy()

    @staticmethod
    def _timer(entry: Entry) -> TurnTimer:
        """An answer's timer, started with what the caller's event says of the end of the turn."""
        message = entry.message
        if isinstance(message, TranscriptFinal):
            timer = TurnTimer("speech")
            timer.mark("end_of_turn", message.decided_ts or message.ts)
        else:
            timer = TurnTimer("dtmf")  # a key press ends the turn at once, with nothing to recognise
            timer.mark("end_of_turn", message.ts)
        timer.mark("asr_final", message.ts)
        return timer

    def _turn_id(self, work: Work) -> str:
        if work.entry is not None:
            return f"t{work.entry.id}" + (f"-{work.retry}" if work.retry else "")
        if work.kind == "follow_up":
            return f"f{self.state.follow_up_turns}"
        return work.kind

    async def _run_turn(self, turn: Turn, work: Work) -> None:
        if work.kind == "utterance":
            await self.runner.answer(turn, work.text, work.text)
        elif work.kind == "dtmf":
            await self._dtmf(turn, work.text)
        elif work.kind == "final":
            hangup = ToolCall("final", "hangup", {"reason": "no answer"})
            await self.runner.say(turn, work.text, action=hangup)
        elif work.kind == "greeting":
            await self.runner.say(turn, self.playbook.render_greeting(self.variables()))
        else:
            await self.runner.say(turn, work.text)

    async def _dtmf(self, turn: Turn, digit: str) -> None:
        scene = self.state.scene or None
        found = self.playbook.on_dtmf(digit, scene, scripted=self.provider.scripted)
        note = f"[The caller pressed {digit} on the keypad.]"
        if isinstance(found, DtmfAction):
            text = self._render(found.text or "", "dtmf")
            await self.runner.say(turn, text, note, dtmf_tool_call(found))
        elif isinstance(found, ScriptRule):
            action = rule_action(found, f"rule-{found.line}") if found.action else None
            await self.runner.say(turn, self._render(found.say, "rule"), note, action)
        elif self.provider.scripted:
            await self.runner.say(turn, self._render(self.playbook.fallback or "", "fallback"), note)
        else:
            await self.runner.answer(turn, note, "")

    async def _turn_done(self, turn: Turn) -> None:
        if turn is self.current:
            self.current = None
        if turn.withdrawn:
            return  # its caller events are answered by the reply that took them over
        task = turn.task
        if task is not None and not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error("turn failed", extra={"call_id": self.call_id, "turn_id": turn.turn_id}, exc_info=error)
            turn.result = "failed"
            await self._emit(CallError(source=ROLE, error=f"turn {turn.turn_id}: {error}"))
        if not turn.committed:
            await self._commit(turn, turn.partial_messages())
        for entry_id in turn.entry_ids:
            self.cursor.done(entry_id)
        now = self._now()
        if turn.result == "cancelled":
            pass  # the caller is talking: silence is timed from when they stop
        elif turn.said:
            self.clock.agent_spoke(turn.turn_id, now, self._estimate_s(turn.text))
        elif not self.work:
            self.clock.start(now)
        end = self.state.pending_end
        if end is not None and not self.state.end_sent and end.turn_id == turn.turn_id:
            if turn.said and turn.result != "cancelled":
                self.end_due = now + self._estimate_s(turn.text) * 1.5 + 1.0
            else:
                await self._end_call()

    async def _commit(self, turn: Turn, messages: list[Message]) -> None:
        for message in messages:
            message["turn_id"] = turn.turn_id
        if turn.kind == "greeting":
            self.state.greeted = True
        await with_reconnect(lambda: self.store.commit(messages, self.state, turn.entry_ids), "history")
        for speaker, text in transcript_lines(messages):
            await self.calls.append_transcript(self.call_id, speaker, text)
        self.history.extend(messages)
        self.answered.update(turn.entry_ids)
        turn.committed = True
        metrics.TURNS.labels(turn.result).inc()

    async def _stop_current_turn(self) -> None:
        turn = self.current
        if turn is None or turn.task is None:
            return
        await stop_tasks([turn.task])
        if not turn.committed:
            turn.result = "cancelled"
            await self._commit(turn, turn.partial_messages())

    def _follow_up(self) -> None:
        follow_up = self.playbook.follow_up
        assert follow_up is not None
        if self.state.follow_ups < follow_up.max_count:
            self.state.follow_ups += 1
            self.state.follow_up_turns += 1
            self.work.append(Work("follow_up", text=self._render(follow_up.text, "follow_up.text")))
        else:
            self.work.append(Work("final", text=self._render(follow_up.final_text, "follow_up.final_text")))
        self.clock.busy()

    # ---------------------------------------------------------------- barge-in

    async def _barge_in(self, message: BargeIn) -> None:
        self.clock.interrupted(message.turn_id)
        turn = self.current
        if turn is not None and turn.turn_id == message.turn_id and not turn.committed:
            if turn.task is not None and not turn.task.done():
                await stop_tasks([turn.task])
                turn.result = "cancelled"
            messages = self._cut(turn.partial_messages(), message)
            await self._commit(turn, messages)
        elif not await self._cut_history(message):
            return
        await self._emit(TurnCancelled(turn_id=message.turn_id, reason="barge_in"))
        end = self.state.pending_end
        if end is not None and not self.state.end_sent and end.turn_id == message.turn_id:
            await self._end_call()

    def _cut(self, messages: list[Message], message: BargeIn) -> list[Message]:
        durations = self.durations.get(message.turn_id)
        return cut_turn(messages, message.played_ms, durations, self.words_per_s)

    async def _cut_history(self, message: BargeIn) -> bool:
        """Cut a committed turn in the history; False when there is nothing (left) to cut."""
        indexes = [i for i, m in enumerate(self.history) if m.get("turn_id") == message.turn_id]
        spoken = [i for i in indexes if "pieces" in self.history[i]]
        if not spoken or any("cut" in self.history[i] for i in spoken):
            return False
        first, last = indexes[0], indexes[-1] + 1
        cut = self._cut(self.history[first:last], message)
        history = self.history[:first] + cut + self.history[last:]
        await with_reconnect(lambda: self.store.rewrite(history, self.state), "history")
        self.history = history
        return True

    # ---------------------------------------------------------------- ending

    async def _end_call(self) -> None:
        """Carry out the pending hangup or transfer on the call's edge."""
        end = self.state.pending_end
        self.end_due = None
        if end is None:
            return
        record = await self.calls.get(self.call_id)
        if record is None or not record.edge:
            await self._emit(CallError(source=ROLE, error=f"cannot {end.kind}: the call has no edge"))
            self.finished = True
            return
        stream = self.bus.keys.edge_control(record.edge)
        command: BusMessage
        if end.kind == "transfer":
            command = Transfer(call_id=self.call_id, target=end.target)
            await self._emit(TransferRequested(target=end.target, by=ROLE))
            self.state.pending_end = None
        else:
            command = Hangup(call_id=self.call_id, reason=end.reason, by=ROLE)
            self.state.end_sent = True
            self.end_wait_until = self._now() + HANGUP_WAIT_S
        await with_reconnect(lambda: self.bus.publish(stream, command), end.kind)
        await with_reconnect(lambda: self.store.commit((), self.state, ()), "history")
        log.info("call end requested", extra={"call_id": self.call_id, "action": end.kind})

    async def _fail(self, error: str) -> None:
        """The call cannot be served (its playbook is missing or broken): report it and hang up."""
        log.error("conversation failed", extra={"call_id": self.call_id, "error": error})
        await self._emit(CallError(source=ROLE, error=error))
        record = await self.calls.get(self.call_id)
        if record is not None and record.edge:
            hangup = Hangup(call_id=self.call_id, reason=EndReason.PLAYBOOK_ERROR, by=ROLE)
            await self.bus.publish(self.bus.keys.edge_control(record.edge), hangup)

    # ---------------------------------------------------------------- helpers

    def variables(self) -> dict[str, Any]:
        return {**self.call_vars, **self.state.variables}

    def _render(self, template: str, what: str) -> str:
        return self.playbook.render(template, self.variables(), name=f"{self.playbook.filename} {what}")

    def _request(self, turn_messages: list[Message], utterance: str) -> ModelRequest:
        variables = self.variables()
        scene = self.state.scene or self.playbook.start_scene.name
        scripted = self.provider.scripted
        return ModelRequest(
            system="" if scripted else self.playbook.system_prompt(scene, variables),
            messages=request_messages([*self.history, *turn_messages]),
            tools=self.tool_specs if self.provider.continues_after_tools else [],
            settings=self.settings,
            playbook=self.playbook,
            scene=scene,
            variables=variables,
            utterance=utterance,
        )

    def _estimate_s(self, text: str) -> float:
        return len(text.split()) / self.words_per_s

    async def _emit(self, message: BusMessage) -> None:
        await with_reconnect(lambda: self.bus.emit(self.call_id, message), message.TYPE)


def transcript_lines(messages: list[Message]) -> list[tuple[str, str]]:
    """(speaker, text) for the call record: what the caller said and what the agent said."""
    lines = []
    for message in messages:
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        text = " ".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text").strip()
        if text:
            lines.append(("caller" if message.get("role") == "user" else "agent", text))
    return lines


def dtmf_tool_call(action: DtmfAction) -> ToolCall | None:
    """A DTMF map action as the tool call that carries it out (``say`` has none)."""
    call_id = f"dtmf-{action.digit}"
    if action.action == "goto":
        return ToolCall(call_id, "goto_scene", {"scene": action.scene})
    if action.action == "transfer":
        return ToolCall(call_id, "transfer", {"target": action.target or ""})
    if action.action == "hangup":
        return ToolCall(call_id, "hangup", {"reason": f"dtmf {action.digit}"})
    return None
