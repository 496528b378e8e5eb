"""A leg that replaces one lost or drained elsewhere picks the call up where the caller left it.

The old leg's playout is gone with it; what it was doing is on the bus. ``call:{id}:events`` says
which turns have audio (``say.synthesized``), which started (``playback.started``, at its wall time),
paused or resumed (with ``played_ms``), and which are over (``playback.finished``,
``turn.cancelled``, ``barge_in``); ``call:{id}:audio:out`` holds their chunks. At ``heard_until`` the
turn playing had played the ``played_ms`` of its last such event plus the time since (a paused turn
stays where it paused), and the turns queued behind it had not started. The new leg's playout gets
every unfinished turn's chunks in stream order, the playing turn set at that point (its next frame
is announced with ``playback.resumed``, so the llm knows the turn goes on and the history keeps
what the caller hears), and the finished turns closed, so chunks of theirs still on the way are
dropped.

The caller's side keeps its media clock: the new leg's ``audio:in`` frames and speech events are
shifted to follow the old leg's last frame by the time since it was written, so the asr's turn
detector sees time go on rather than start again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

from activecall.bus import Bus, Entry, as_str
from activecall.media.leg import LegSink
from activecall.media.playout import Playout
from activecall.messages import (
    AudioChunk,
    AudioFrame,
    BargeIn,
    Message,
    PlaybackFinished,
    PlaybackPaused,
    PlaybackResumed,
    PlaybackStarted,
    SaySynthesized,
    SpeechStarted,
    SpeechStopped,
    TurnCancelled,
)

PAGE: Final = 200
FRAME_MS: Final = 20


@dataclass
class TurnSoFar:
    """One turn as the events tell it, up to the takeover."""

    turn_id: str
    has_audio: bool = False
    closed: bool = False
    started: bool = False
    played_ms: int = 0  # at ``since`` (or where it paused)
    since: float | None = None  # wall time it last started or resumed playing; None: not playing

    def played_at(self, when: float) -> int:
        if self.since is None:
            return self.played_ms
        return self.played_ms + max(0, int((when - self.since) * 1000))


def turns_so_far(events: list[Message]) -> dict[str, TurnSoFar]:
    """Every turn the events name, in the order they do."""
    turns: dict[str, TurnSoFar] = {}
    for message in events:
        turn_id = getattr(message, "turn_id", None)
        if not isinstance(turn_id, str) or not turn_id:
            continue
        turn = turns.setdefault(turn_id, TurnSoFar(turn_id))
        if isinstance(message, SaySynthesized):
            turn.has_audio = True
        elif isinstance(message, PlaybackStarted):
            turn.started, turn.played_ms, turn.since = True, 0, message.ts
        elif isinstance(message, PlaybackResumed):
            turn.started, turn.played_ms, turn.since = True, message.played_ms, message.ts
        elif isinstance(message, PlaybackPaused):
            turn.started, turn.played_ms, turn.since = True, message.played_ms, None
        elif isinstance(message, PlaybackFinished | TurnCancelled | BargeIn):
            turn.closed = True
    return turns


@dataclass
class Pickup:
    """What a takeover leg starts from."""

    chunks: list[AudioChunk] = field(default_factory=list)  # of the unfinished turns, in stream order
    played_ms: dict[str, int] = field(default_factory=dict)  # turns that had started: how far
    closed: list[str] = field(default_factory=list)
    audio_cursor: str = "0-0"  # audio:out is followed from here on
    clock_ms: int = 0  # where the caller's media clock goes on
    clock_seq: int = 0


async def pick_up(bus: Bus, call_id: str, heard_until: float) -> Pickup:
    """Read where the call's audio stood at ``heard_until`` (0: now)."""
    keys = bus.keys
    events_stream = keys.events(call_id)
    raw_events = await bus.redis.xrange(events_stream)
    turns = turns_so_far([e.message for e in bus.decode_entries(events_stream, raw_events or [])])
    when = heard_until or time.time()
    pickup = Pickup(closed=[t.turn_id for t in turns.values() if t.closed])
    pickup.played_ms = {t.turn_id: t.played_at(when) for t in turns.values() if t.started and not t.closed}
    pickup.chunks, pickup.audio_cursor = await _unfinished_chunks(bus, keys.audio_out(call_id), turns)
    pickup.clock_ms, pickup.clock_seq = await _caller_clock(bus, keys.audio_in(call_id))
    return pickup


async def _unfinished_chunks(
    bus: Bus, stream: str, turns: dict[str, TurnSoFar]
) -> tuple[list[AudioChunk], str]:
    """The chunks of turns not over, read back from the end of ``audio:out`` until the first chunk of
    each turn with audio is found (the tts announces a turn's audio before writing it), and the id of
    the newest entry."""
    wanted = {t.turn_id for t in turns.values() if t.has_audio and not t.closed}
    found: list[Entry] = []
    newest = ""
    end = "+"
    while True:
        raw = await bus.redis.xrevrange(stream, end, "-", count=PAGE)
        if not raw:
            break
        newest = newest or as_str(raw[0][0])
        for entry in bus.decode_entries(stream, raw):
            chunk = entry.message
            if not isinstance(chunk, AudioChunk):
                continue
            turn = turns.get(chunk.turn_id)
            if turn is not None and turn.closed:
                continue
            wanted.add(chunk.turn_id)
            found.append(entry)
            if chunk.seq == 0:
                wanted.discard(chunk.turn_id)
        if not wanted or len(raw) < PAGE:
            break
        end = f"({as_str(raw[-1][0])}"
    chunks = [e.message for e in reversed(found) if isinstance(e.message, AudioChunk)]
    return chunks, newest or "0-0"


async def _caller_clock(bus: Bus, stream: str) -> tuple[int, int]:
    """(milliseconds, frame number) at which the caller's audio goes on: after the last frame written,
    by the time that has passed since."""
    raw = await bus.redis.xrevrange(stream, count=1)
    entries = bus.decode_entries(stream, raw or [])
    if not entries or not isinstance(entries[0].message, AudioFrame):
        return 0, 0
    last = entries[0].message
    frames = max(1, len(last.pcm) * 1000 // (2 * last.sample_rate * FRAME_MS))
    gap_frames = max(0, int((time.time() - last.ts) * 1000) // FRAME_MS) if last.ts else 0
    return last.at_ms + (frames + gap_frames) * FRAME_MS, last.seq + frames + gap_frames


def restore(playout: Playout, pickup: Pickup) -> None:
    """Fill a new leg's playout from ``pickup``."""
    playout.close_turns(pickup.closed)
    for chunk in pickup.chunks:
        playout.add_chunk(
            chunk.turn_id, chunk.seq, chunk.pcm, chunk.sample_rate, chunk.last, chunk.interruptible
        )
    for turn_id, played_ms in pickup.played_ms.items():
        playout.carry_on(turn_id, played_ms)


class ShiftedSink:
    """A leg's sink that moves its caller frames and speech events onto the call's media clock."""

    def __init__(self, sink: LegSink) -> None:
        self.sink = sink
        self.ms = 0
        self.seq = 0

    def frame(self, call_id: str, pcm: bytes, sample_rate: int, seq: int, at_ms: int) -> None:
        self.sink.frame(call_id, pcm, sample_rate, seq + self.seq, at_ms + self.ms)

    def event(self, call_id: str, message: Message) -> None:
        if isinstance(message, SpeechStarted | SpeechStopped):
            message.at_ms += self.ms
        self.sink.event(call_id, message)
