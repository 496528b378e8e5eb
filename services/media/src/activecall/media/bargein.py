"""Barge-in: caller speech over a playing turn, decided inside the worker with no bus round trip.

A turn may be cut once it has played ``guard_ms`` (the caller's line echo and a stray word right at
the start do not count) and the caller has then spoken for ``min_speech_ms``. Speech is counted in
VAD frames; a single non-speech frame inside a run is tolerated, because the WebRTC detector flickers
between syllables.
"""

from __future__ import annotations

from typing import Final

TOLERATED_GAP_FRAMES: Final = 1


class BargeInDetector:
    """Feed one caller frame's VAD decision with the playing turn's position; True means cut it."""

    def __init__(self, guard_ms: int, min_speech_ms: int, frame_ms: int = 20) -> None:
        self.guard_ms = guard_ms
        self.min_speech_ms = max(frame_ms, min_speech_ms)
        self.frame_ms = frame_ms
        self._speech_ms = 0
        self._gap_frames = 0

    def reset(self) -> None:
        self._speech_ms = 0
        self._gap_frames = 0

    def feed(self, speech: bool, playing_ms: int | None) -> bool:
        """``playing_ms``: how much of the current turn has played, None when no turn plays."""
        if playing_ms is None or playing_ms < self.guard_ms:
            self.reset()
            return False
        if speech:
            self._speech_ms += self.frame_ms
            self._gap_frames = 0
        elif self._speech_ms:
            self._gap_frames += 1
            if self._gap_frames > TOLERATED_GAP_FRAMES:
                self.reset()
        if self._speech_ms >= self.min_speech_ms:
            self.reset()
            return True
        return False


class CallerActivity:
    """Whether the caller is speaking now, for holding back a turn that has not started yet.

    It switches on after ``start_frames`` speech frames in a row and off after ``stop_frames``
    non-speech frames in a row. It reacts faster than the speech events (which wait for the
    minimum speech before they say anything), because a reply must not begin over a caller who has
    just started a word; and it lets go after a short silence, because a held reply adds that
    silence to the turn latency.
    """

    __slots__ = ("start_frames", "stop_frames", "speaking", "_run")

    def __init__(self, start_frames: int = 2, stop_frames: int = 8) -> None:
        self.start_frames = start_frames
        self.stop_frames = stop_frames
        self.speaking = False
        self._run = 0  # frames in a row that contradict ``speaking``

    def feed(self, speech: bool) -> bool:
        if speech is self.speaking:
            self._run = 0
            return self.speaking
        self._run += 1
        if self._run >= (self.stop_frames if self.speaking else self.start_frames):
            self.speaking = speech
            self._run = 0
        return self.speaking
