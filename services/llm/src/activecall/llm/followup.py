"""When the caller has been silent long enough for a follow-up line.

Silence is counted from the moment the agent's last turn finished playing: the media worker's
``playback.finished`` for that turn, or, if none comes, a generous estimate of its length from the
time it was sent. Caller speech stops the count (``speech.started``); when speech ends without an
answer (``speech.stopped`` and no transcript, noise say) the count starts again. While a turn is
being generated there is no count at all. A worker that takes a call over starts counting afresh.
"""

from __future__ import annotations

from typing import Final

# The estimate covers slow voices and bus delays: only used when no playback.finished arrives.
ESTIMATE_FACTOR: Final = 1.5
ESTIMATE_MARGIN_S: Final = 1.0


class SilenceClock:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.since: float | None = None
        self.playing: str | None = None

    def agent_spoke(self, turn_id: str, now: float, estimated_s: float) -> None:
        """A turn was sent in full; silence starts when it has played."""
        self.playing = turn_id
        self.since = now + estimated_s * ESTIMATE_FACTOR + ESTIMATE_MARGIN_S

    def playback_finished(self, turn_id: str, now: float) -> None:
        if turn_id == self.playing:
            self.playing = None
            self.since = now

    def caller_started(self) -> None:
        self.since = None

    def interrupted(self, turn_id: str) -> None:
        """The caller talked over a turn: it will not finish playing."""
        if turn_id == self.playing:
            self.playing = None
        self.since = None

    def caller_stopped(self, now: float) -> None:
        if self.playing is None:
            self.since = now

    def busy(self) -> None:
        """A turn is being answered: no follow-up until it has been said."""
        self.since = None
        self.playing = None

    def start(self, now: float) -> None:
        self.since = now

    def due_at(self) -> float | None:
        return None if self.since is None else self.since + self.timeout_s
