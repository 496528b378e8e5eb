"""The end-of-turn state machine: when has the caller finished speaking?

Fed one frame at a time (20 ms: is it speech, where is it on the media clock), it follows the turn:

- idle until a speech frame; then the turn runs and every speech frame moves ``speech_end_ms``;
- at the first pause (``pause_ms`` of silence after speech) it asks the judge once (:class:`AskJudge`:
  the caller runs the judge, in a thread if it likes, and hands the verdict to :meth:`answer`);
- the verdict's probability sets the silence that ends the turn: ``complete_silence_ms`` when the
  sentence is surely finished (P >= :data:`SURE_FINISHED`), ``incomplete_silence_ms`` (capped by
  ``max_silence_ms``) when it surely is not (P <= :data:`SURE_UNFINISHED`), and in proportion
  between: a wrong "unfinished" costs the caller most of a second, a wrong "finished" a reply that
  may still be taken back, so an unsure verdict waits in between; no verdict by ``max_silence_ms``
  ends the turn too;
- ``resume_ms`` of speech during the wait cancels it (a click or a breath does not), and the next
  pause asks again.

With ``preemptive`` the turn ends as soon as the verdict is in, and the wait it asked for becomes the
reply's start instead: ``reply_at_ms`` (speech end plus that wait) travels with the final, so the
recognizer's final, the answer and its speech are made while the caller's silence runs, and the
reply's audio still does not start before it has run out. Speech that resumes before then is a new
turn, and the answer not yet heard is taken back and merged with it (the conversation's floor rule).

In the ``silence`` mode there is no judge: ``silence_ms`` of silence ends the turn. Time only moves
with the frames (or :meth:`advance`, for audio that stopped coming), so the same audio always gives
the same decisions: a worker that takes a call over decides as the first one did.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from activecall.asr.turn.judge import TURN_MODES, Verdict

FRAME_MS: Final = 20
SURE_FINISHED: Final = 0.6
SURE_UNFINISHED: Final = 0.15


@dataclass(frozen=True)
class TurnSettings:
    mode: str = "smart_turn"
    pause_ms: int = 200
    complete_silence_ms: int = 300
    incomplete_silence_ms: int = 1200
    max_silence_ms: int = 2000
    silence_ms: int = 500  # the silence mode's whole rule
    min_speech_ms: int = 120  # less speech than this and no words is not a turn (a click)
    resume_ms: int = 60  # speech that cancels a wait
    preemptive: bool = False  # end at the verdict; the wait moves to the reply's start

    def __post_init__(self) -> None:
        if self.mode not in TURN_MODES:
            raise ValueError(f"turn mode must be one of {', '.join(TURN_MODES)}, not {self.mode!r}")
        if not 0 < self.pause_ms <= self.complete_silence_ms <= self.incomplete_silence_ms:
            raise ValueError("need 0 < pause_ms <= complete_silence_ms <= incomplete_silence_ms")
        if self.max_silence_ms < self.complete_silence_ms or self.silence_ms <= 0:
            raise ValueError("need max_silence_ms >= complete_silence_ms and silence_ms > 0")

    @property
    def unfinished_wait_ms(self) -> int:
        return min(self.incomplete_silence_ms, self.max_silence_ms)

    def wait_ms(self, probability: float) -> int:
        """The silence that ends a turn judged finished with ``probability``."""
        unsure = (SURE_FINISHED - probability) / (SURE_FINISHED - SURE_UNFINISHED)
        unsure = min(1.0, max(0.0, unsure))
        return round(self.complete_silence_ms + unsure * (self.unfinished_wait_ms - self.complete_silence_ms))


@dataclass(frozen=True)
class AskJudge:
    """Run the judge on the audio and partial text up to now, then call ``answer(pause, verdict)``."""

    pause: int
    speech_end_ms: int


@dataclass(frozen=True)
class TurnEnd:
    """The turn is over: ``eot`` is ``complete``, ``incomplete``, ``silence`` or ``hangup``."""

    eot: str
    start_ms: int
    speech_end_ms: int
    decided_ms: int  # media clock of the decision
    speech_ms: int
    verdict: Verdict | None = None
    reply_at_ms: int = 0  # preemptive: the media clock before which no reply may start


Event = AskJudge | TurnEnd


class State(enum.Enum):
    IDLE = "idle"
    SPEAKING = "speaking"
    WAITING = "waiting"  # a pause was judged (or is being judged)


class TurnDetector:
    def __init__(self, settings: TurnSettings, frame_ms: int = FRAME_MS) -> None:
        self.settings = settings
        self.frame_ms = frame_ms
        self.state = State.IDLE
        self.position_ms = 0  # end of the last frame seen (or of the time advanced to)
        self.start_ms = 0
        self.speech_end_ms = 0
        self.speech_ms = 0
        self.pause = 0  # number of the pause being judged; bumped when speech resumes
        self.verdict: Verdict | None = None
        self._asked = False
        self._run_ms = 0  # speech heard since the wait began

    @property
    def in_turn(self) -> bool:
        return self.state is not State.IDLE

    @property
    def silence_ms(self) -> int:
        return self.position_ms - self.speech_end_ms if self.in_turn else 0

    def feed(self, speech: bool, at_ms: int) -> Event | None:
        """One frame starting at ``at_ms`` on the media clock; what the caller must do now, if anything."""
        end_ms = at_ms + self.frame_ms
        self.position_ms = max(self.position_ms, end_ms)
        if self.state is State.IDLE:
            if speech:
                self.state = State.SPEAKING
                self.start_ms, self.speech_end_ms, self.speech_ms = at_ms, end_ms, self.frame_ms
            return None
        if speech:
            if self.state is State.SPEAKING:
                self.speech_end_ms = end_ms
                self.speech_ms += self.frame_ms
                return None
            self._run_ms += self.frame_ms
            if self._run_ms >= self.settings.resume_ms:
                self._resume(end_ms)
                return None
        else:
            self._run_ms = 0
        return self._check()

    def advance(self, now_ms: int) -> Event | None:
        """No audio came up to ``now_ms`` (media clock): count the gap as silence."""
        if now_ms <= self.position_ms:
            return None
        self.position_ms = now_ms
        self._run_ms = 0
        return self._check() if self.in_turn else None

    def answer(self, pause: int, verdict: Verdict) -> TurnEnd | None:
        """The judge's verdict on pause ``pause``; ignored when speech resumed since."""
        if pause != self.pause or self.state is not State.WAITING:
            return None
        self.verdict = verdict
        return self._due()

    def hangup(self) -> TurnEnd | None:
        """The call ended: the turn in progress ends with it."""
        if not self.in_turn:
            return None
        return self._end("hangup")

    def reset(self) -> None:
        self.state = State.IDLE
        self.speech_ms = 0
        self.verdict = None
        self._asked = False
        self._run_ms = 0
        self.pause += 1

    def _resume(self, end_ms: int) -> None:
        self.state = State.SPEAKING
        self.speech_end_ms = end_ms
        self.speech_ms += self._run_ms
        self._run_ms = 0
        self.verdict = None
        self._asked = False
        self.pause += 1

    def _check(self) -> Event | None:
        s = self.settings
        if s.mode == "silence":
            return self._end("silence") if self.silence_ms >= s.silence_ms else None
        if self.state is State.SPEAKING and self.silence_ms >= s.pause_ms:
            self.state = State.WAITING
        if self.state is State.WAITING and not self._asked:
            self._asked = True
            return AskJudge(self.pause, self.speech_end_ms)
        return self._due() if self.state is State.WAITING else None

    def _due(self) -> TurnEnd | None:
        s = self.settings
        if self.verdict is None:
            return self._end("silence") if self.silence_ms >= s.max_silence_ms else None
        wait_ms = s.wait_ms(self.verdict.probability)
        eot = "complete" if self.verdict.finished else "incomplete"
        if s.preemptive:
            return self._end(eot, reply_at_ms=self.speech_end_ms + wait_ms)
        if self.silence_ms < wait_ms:
            return None
        return self._end(eot)

    def _end(self, eot: str, reply_at_ms: int = 0) -> TurnEnd:
        end = TurnEnd(
            eot,
            self.start_ms,
            self.speech_end_ms,
            self.position_ms,
            self.speech_ms,
            self.verdict,
            reply_at_ms,
        )
        self.reset()
        return end
