"""Agent audio of one leg: turns built from ``audio:out`` chunks, handed out one 20 ms frame per tick.

Chunks are idempotent by ``(turn_id, seq)``: the stream is ordered, so a chunk whose ``seq`` is not
above the last one taken for its turn is a redelivery and is dropped, as is any chunk of a turn that
finished or was cancelled. Turns play in the order their first chunk arrived. A turn whose audio
runs dry before its ``last`` chunk leaves a gap of silence; the next audio frame starts a new
talkspurt (RTP marker bit, RFC 3551 section 4.1).

Events, in the order they happen: ``PlaybackStarted`` when a turn's first frame is taken;
``PlaybackPaused`` and ``PlaybackResumed`` when caller speech pauses the playing turn and the
conversation lets it go on; ``BargeIn`` and ``TurnCancelled`` when a turn is cut;
``PlaybackFinished`` (with the milliseconds played) when a started turn ends, however it ends.

Two rules keep the agent from talking over the caller: while ``hold`` is set (the caller is
speaking) no turn starts, and a paused turn sends silence until it is resumed or cut. A turn made
before the caller's silence was over waits for its ``start_at`` too.

A leg that takes a call over from another worker (:mod:`activecall.media.takeover`) closes the turns
that were over there and carries on the one that was playing from where the caller left it; that
turn's next frame is announced with ``PlaybackResumed``, not ``PlaybackStarted``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from activecall.media.resample import Resampler
from activecall.messages import (
    BargeIn,
    Message,
    PlaybackFinished,
    PlaybackPaused,
    PlaybackResumed,
    PlaybackStarted,
    TurnCancelled,
)

SAMPLE_RATE: Final = 8000
FRAME_SAMPLES: Final = 160
FRAME_BYTES: Final = 2 * FRAME_SAMPLES
CLOSED_TURNS_REMEMBERED: Final = 256
_COMPACT_BYTES: Final = 1 << 16


@dataclass
class Turn:
    turn_id: str
    pcm: bytearray = field(default_factory=bytearray)  # PCM16 at 8 kHz not yet played
    position: int = 0
    last_seq: int = -1
    complete: bool = False
    started: bool = False
    played_samples: int = 0
    resampler: Resampler | None = None
    interruptible: bool = True
    carried_over: bool = False  # started on another leg: its next frame here resumes it
    start_at: float = 0.0  # monotonic time before which it may not start (0: any time)

    @property
    def available(self) -> int:
        return len(self.pcm) - self.position

    @property
    def played_ms(self) -> int:
        return self.played_samples * 1000 // SAMPLE_RATE

    def take(self) -> bytes:
        """The next frame; the end of a complete turn is padded with silence."""
        start = self.position
        frame = bytes(self.pcm[start : start + FRAME_BYTES])
        self.position = start + len(frame)
        self.played_samples += len(frame) // 2
        if self.position > _COMPACT_BYTES:
            del self.pcm[: self.position]
            self.position = 0
        if len(frame) < FRAME_BYTES:
            frame += bytes(FRAME_BYTES - len(frame))
        return frame


class Playout:
    """The turns of one leg. ``next_frame()`` once per tick; ``marker`` tells whether the frame it
    returned starts a talkspurt."""

    def __init__(self, emit: Callable[[Message], None]) -> None:
        self.emit = emit
        self.marker = False
        self._turns: OrderedDict[str, Turn] = OrderedDict()
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._silent = True
        self.hold = False  # the caller is speaking: no turn may start
        self.paused: Turn | None = None

    @property
    def current(self) -> Turn | None:
        """The turn playing or next to play."""
        return next(iter(self._turns.values()), None)

    def playing_ms(self) -> int | None:
        """Milliseconds of the current turn already played, or None when no turn is playing that
        caller speech may pause (none started, it is paused already, or it is not interruptible)."""
        if not self._turns:  # the usual case, asked for every caller frame
            return None
        turn = self.current
        if turn is None or not turn.started or not turn.interruptible or turn is self.paused:
            return None
        return turn.played_ms

    def queued(self) -> list[str]:
        return list(self._turns)

    def add_chunk(
        self,
        turn_id: str,
        seq: int,
        pcm: bytes,
        sample_rate: int,
        last: bool,
        interruptible: bool = True,
        start_at: float = 0.0,
    ) -> bool:
        """Take one chunk; False when it is a duplicate or belongs to a finished or cancelled turn.
        The first chunk of a turn says whether caller speech may pause it, and when it may start
        (``start_at``, monotonic: a reply made before the caller's silence was over)."""
        if turn_id in self._closed:
            return False
        turn = self._turns.get(turn_id)
        if turn is None:
            turn = self._turns[turn_id] = Turn(turn_id, interruptible=interruptible, start_at=start_at)
        elif seq <= turn.last_seq or turn.complete:
            return False
        turn.last_seq = seq
        turn.pcm += self._to_8k(turn, pcm, sample_rate)
        if last:
            if turn.resampler is not None:
                turn.pcm += turn.resampler.flush().astype("<i2").tobytes()
                turn.resampler = None
            turn.complete = True
        return True

    @staticmethod
    def _to_8k(turn: Turn, pcm: bytes, sample_rate: int) -> bytes:
        if sample_rate == SAMPLE_RATE:
            return pcm
        if turn.resampler is None or turn.resampler.in_rate != sample_rate:
            turn.resampler = Resampler(sample_rate, SAMPLE_RATE)
        return turn.resampler.process(pcm).astype("<i2").tobytes()

    def next_frame(self) -> bytes | None:
        """PCM16 of the frame to send now, or None for silence."""
        if not self._turns:  # the usual case, asked every tick
            self._silent = True
            self.marker = False
            return None
        while (turn := self.current) is not None:
            if turn is self.paused:
                break
            if turn.available >= FRAME_BYTES or (turn.complete and turn.available > 0):
                if not turn.started:
                    if self.hold or (turn.start_at and time.monotonic() < turn.start_at):
                        break
                    turn.started = True
                    self.emit(PlaybackStarted(turn_id=turn.turn_id))
                elif turn.carried_over:
                    turn.carried_over = False
                    self.emit(PlaybackResumed(turn_id=turn.turn_id, played_ms=turn.played_ms))
                self.marker = self._silent
                self._silent = False
                return turn.take()
            if not turn.complete:
                break  # underrun: the rest of the turn is still on its way
            self._close(turn)
            self.emit(PlaybackFinished(turn_id=turn.turn_id, played_ms=turn.played_ms))
        self._silent = True
        self.marker = False
        return None

    def close_turns(self, turn_ids: list[str]) -> None:
        """Turns that are over elsewhere: chunks of theirs that still come are dropped."""
        for turn_id in turn_ids:
            if turn_id not in self._turns:
                self._remember(turn_id)

    def carry_on(self, turn_id: str, played_ms: int) -> None:
        """A turn another leg had played ``played_ms`` of goes on from there (as far as its audio goes)."""
        turn = self._turns.get(turn_id)
        if turn is None or turn.started:
            return
        samples = min(played_ms * SAMPLE_RATE // 1000, len(turn.pcm) // 2)
        turn.position = 2 * samples
        turn.played_samples = samples
        turn.started = turn.carried_over = True

    def cancel(self, turn_id: str, reason: str) -> bool:
        """Drop a turn (playing or queued) and every chunk still to come for it."""
        turn = self._turns.get(turn_id)
        if turn is None:
            self._remember(turn_id)
            return False
        self._close(turn)
        self.emit(TurnCancelled(turn_id=turn_id, reason=reason))
        if turn.started:
            self.emit(PlaybackFinished(turn_id=turn_id, played_ms=turn.played_ms))
            self._silent = True
        return True

    def cancel_all(self, reason: str) -> int:
        return sum(self.cancel(turn_id, reason) for turn_id in list(self._turns))

    def pause(self) -> PlaybackPaused | None:
        """Pause the playing turn for caller speech; it keeps its place and what is queued behind it."""
        turn = self.current
        if turn is None or not turn.started or turn is self.paused:
            return None
        self.paused = turn
        event = PlaybackPaused(turn_id=turn.turn_id, played_ms=turn.played_ms)
        self.emit(event)
        return event

    def resume(self, turn_id: str) -> bool:
        """Play the paused turn on (``turn_id`` empty: whichever is paused); False if it is not paused."""
        turn = self.paused
        if turn is None or (turn_id and turn.turn_id != turn_id):
            return False
        self.paused = None
        self.emit(PlaybackResumed(turn_id=turn.turn_id, played_ms=turn.played_ms))
        return True

    def barge_in(self) -> BargeIn | None:
        """Cut the playing turn, and the turns queued behind it, for caller speech."""
        turn = self.current
        if turn is None or not turn.started:
            return None
        event = BargeIn(turn_id=turn.turn_id, played_ms=turn.played_ms)
        self.emit(event)
        self.cancel_all("barge_in")
        return event

    def _close(self, turn: Turn) -> None:
        if turn is self.paused:
            self.paused = None
        del self._turns[turn.turn_id]
        self._remember(turn.turn_id)

    def _remember(self, turn_id: str) -> None:
        self._closed[turn_id] = None
        while len(self._closed) > CLOSED_TURNS_REMEMBERED:
            self._closed.popitem(last=False)
