"""Agent audio of one leg, without sockets: turns, idempotent chunks, talkspurts, events."""

from __future__ import annotations

import time

import numpy as np

from activecall.media.playout import FRAME_BYTES, Playout
from activecall.messages import BargeIn, Message, PlaybackFinished, PlaybackStarted, TurnCancelled


def pcm(frames: float, value: int = 1000) -> bytes:
    return np.full(int(frames * 160), value, dtype="<i2").tobytes()


def make() -> tuple[Playout, list[Message]]:
    events: list[Message] = []
    return Playout(events.append), events


def run(playout: Playout, ticks: int) -> list[tuple[bool, bool]]:
    """(audio?, marker?) per tick."""
    out = []
    for _ in range(ticks):
        frame = playout.next_frame()
        out.append((frame is not None, playout.marker))
    return out


def test_a_turn_plays_frame_by_frame_with_a_marker_at_its_start() -> None:
    playout, events = make()
    assert playout.add_chunk("t1", 0, pcm(2, 100), 8000, last=False)
    assert playout.add_chunk("t1", 1, pcm(1, 200), 8000, last=True)
    frames = [playout.next_frame() for _ in range(4)]
    assert frames[0] == pcm(1, 100) and frames[2] == pcm(1, 200) and frames[3] is None
    assert events == [PlaybackStarted(turn_id="t1"), PlaybackFinished(turn_id="t1", played_ms=60)]


def test_duplicates_and_older_chunks_are_dropped() -> None:
    playout, _ = make()
    assert playout.add_chunk("t1", 0, pcm(1), 8000, last=False)
    assert not playout.add_chunk("t1", 0, pcm(1), 8000, last=False)
    assert playout.add_chunk("t1", 2, pcm(1), 8000, last=True)
    assert not playout.add_chunk("t1", 1, pcm(1), 8000, last=False)
    assert not playout.add_chunk("t1", 3, pcm(1), 8000, last=False)  # after `last`


def test_an_underrun_is_silence_and_the_audio_after_it_starts_a_talkspurt() -> None:
    playout, events = make()
    playout.add_chunk("t1", 0, pcm(2), 8000, last=False)
    assert run(playout, 3) == [(True, True), (True, False), (False, False)]
    playout.add_chunk("t1", 1, pcm(1), 8000, last=True)
    assert run(playout, 2) == [(True, True), (False, False)]
    assert events[-1] == PlaybackFinished(turn_id="t1", played_ms=60)


def test_turns_play_in_arrival_order_and_a_partial_frame_is_padded() -> None:
    playout, events = make()
    playout.add_chunk("b", 0, pcm(1.5, 7), 8000, last=True)
    playout.add_chunk("a", 0, pcm(1), 8000, last=True)
    frames = [playout.next_frame() for _ in range(4)]
    assert frames[1] is not None and frames[1] == pcm(0.5, 7) + bytes(FRAME_BYTES // 2)
    assert [type(e).__name__ + ":" + e.turn_id for e in events] == [  # type: ignore[attr-defined]
        "PlaybackStarted:b",
        "PlaybackFinished:b",
        "PlaybackStarted:a",
        "PlaybackFinished:a",
    ]
    assert events[1] == PlaybackFinished(turn_id="b", played_ms=30)
    assert frames[3] is None


def test_cancel_drops_queued_and_playing_turns_and_their_later_chunks() -> None:
    playout, events = make()
    playout.add_chunk("t1", 0, pcm(5), 8000, last=False)
    playout.add_chunk("t2", 0, pcm(5), 8000, last=True)
    run(playout, 2)
    assert playout.cancel("t2", "stopped")
    assert playout.cancel("t1", "stopped")
    assert not playout.add_chunk("t1", 1, pcm(1), 8000, last=True)
    assert not playout.cancel("t3", "stopped")  # unknown yet: its chunks are refused when they come
    assert not playout.add_chunk("t3", 0, pcm(1), 8000, last=True)
    assert events[1:] == [
        TurnCancelled(turn_id="t2", reason="stopped"),
        TurnCancelled(turn_id="t1", reason="stopped"),
        PlaybackFinished(turn_id="t1", played_ms=40),
    ]
    assert playout.next_frame() is None


def test_barge_in_reports_what_was_played_and_cuts_queued_turns() -> None:
    playout, events = make()
    assert playout.barge_in() is None  # nothing playing
    playout.add_chunk("t1", 0, pcm(10), 8000, last=True)
    playout.add_chunk("t2", 0, pcm(10), 8000, last=True)
    run(playout, 3)
    assert playout.playing_ms() == 60
    assert playout.barge_in() == BargeIn(turn_id="t1", played_ms=60)
    assert events[1:] == [
        BargeIn(turn_id="t1", played_ms=60),
        TurnCancelled(turn_id="t1", reason="barge_in"),
        PlaybackFinished(turn_id="t1", played_ms=60),
        TurnCancelled(turn_id="t2", reason="barge_in"),
    ]
    assert playout.playing_ms() is None and playout.queued() == []


def test_chunks_at_other_rates_are_resampled_to_8khz() -> None:
    playout, events = make()
    t = np.arange(16000) / 16000
    audio = (8000 * np.sin(2 * np.pi * 300 * t)).astype("<i2")
    for seq in range(10):
        playout.add_chunk("t1", seq, audio[seq * 1600 : (seq + 1) * 1600].tobytes(), 16000, last=seq == 9)
    frames = [f for f in (playout.next_frame() for _ in range(60)) if f is not None]
    assert len(frames) == 50
    assert events[-1] == PlaybackFinished(turn_id="t1", played_ms=1000)
    played = np.frombuffer(b"".join(frames), dtype="<i2")[800:7200].astype(float)
    spectrum = np.abs(np.fft.rfft(played))
    assert np.argmax(spectrum) == round(300 * len(played) / 8000)  # still 300 Hz, now at 8 kHz
    assert 7600 < np.abs(played).max() < 8400


def test_a_turn_does_not_start_before_its_start_time() -> None:
    playout, events = make()
    now = time.monotonic()
    playout.add_chunk("early", 0, pcm(2), 8000, last=True, start_at=now + 3600)
    assert run(playout, 3) == [(False, False)] * 3 and events == []
    playout.cancel("early", "withdrawn")
    playout.add_chunk("due", 0, pcm(2), 8000, last=True, start_at=now - 0.001)
    assert run(playout, 2) == [(True, True), (True, False)]
    assert events[-1] == PlaybackStarted(turn_id="due")
