"""The bench's turn-taking figures, from made-up timelines: each can fail when a rule is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from turns.metrics import (
    RESTART_DISTANCE,
    Timeline,
    Utterance,
    analyse,
    dtw_distance,
    format_summary,
    frame_dbfs,
    percentile,
    segments,
    speech_frames,
    summarize,
)

P = 0.020


def agent(*talk: tuple[float, float], until: float = 60.0) -> list[tuple[float, bool]]:
    """A packet every 20 ms from 0 to ``until``; speech inside the (start, end) spans."""
    times = np.arange(0, until, P)
    return [(float(t), any(a <= t <= b for a, b in talk)) for t in times]


def u(
    kind: str, start: float, end: float, pause: tuple[float, float] | None = None, expected: float = 0.0
) -> Utterance:
    return Utterance(kind, kind, "test", start, end, pause, expected)


def test_onset_detection() -> None:
    assert frame_dbfs(np.zeros(160, dtype=np.int16)) == -np.inf
    assert frame_dbfs(np.full(160, 32767, dtype=np.int16)) == pytest.approx(0.0, abs=0.01)
    quiet = np.full(160, 100, dtype=np.int16)  # -50 dBFS
    loud = np.full(160, 3000, dtype=np.int16)  # -20.8 dBFS
    # The last, partial frame is padded with silence: 10 samples at -30 dBFS are below -40 dBFS over 20 ms.
    tail = np.full(10, 1000, dtype=np.int16)
    assert speech_frames(np.concatenate([quiet, loud, quiet, tail])) == [False, True, False, False]
    assert speech_frames(np.concatenate([quiet, loud[:80]])) == [False, True]
    # Gaps shorter than 0.6 s join; a longer one splits.
    segs = segments(agent((1.0, 2.0), (2.4, 3.0), (4.0, 5.0)))
    assert [(round(s.start, 2), round(s.end, 2)) for s in segs] == [(1.0, 3.0), (4.0, 5.0)]
    assert segs[1].packets == 51


def test_greeting_v2v_and_reply_over_caller() -> None:
    timeline = Timeline(
        answered=0.5,
        agent=agent((0.72, 3.0), (6.6, 12.0), (14.5, 20.0)),
        utterances=[u("question", 5.0, 6.0), u("question", 13.0, 15.0)],
        end=60.0,
    )
    figures = analyse(timeline)
    assert figures.first_greeting_ms == pytest.approx(220, abs=1)
    assert figures.v2v_ms == [pytest.approx(600, abs=1)]  # the second question was talked over: no v2v
    assert figures.over_caller == 1


def test_agent_audio_already_playing_is_not_over_the_caller() -> None:
    # A backchannel over a reply that goes on, and an interruption during which the old reply resumes
    # after 0.7 s (a resumption: not counted) and then a new reply starts 1.5 s later over the caller.
    timeline = Timeline(
        answered=0.0,
        agent=agent((1.0, 10.0), (20.0, 21.0), (21.7, 22.0), (23.5, 30.0)),
        utterances=[u("backchannel", 3.0, 3.4, expected=5000), u("interruption", 20.5, 24.0)],
        end=40.0,
    )
    figures = analyse(timeline)
    assert figures.over_caller == 1
    assert (figures.backchannel_stops, figures.backchannels) == (0, 1)
    # It stopped 0.5 s in, but took the old reply up again before the caller had finished.
    assert (figures.missed, figures.interruptions) == (1, 1)
    assert figures.bargein_ms == [pytest.approx(500, abs=1)]
    stopped = analyse(Timeline(0.0, agent((20.0, 21.0), (23.5, 30.0)), [u("interruption", 20.5, 23.0)], 40.0))
    assert (stopped.missed, stopped.interruptions, stopped.over_caller) == (0, 1, 0)
    talked_on = analyse(Timeline(0.0, agent((20.0, 22.0)), [u("interruption", 20.5, 23.0)], 40.0))
    assert (talked_on.missed, talked_on.bargein_ms) == (1, [pytest.approx(1500, abs=1)])


def test_premature_end_of_turn() -> None:
    pause = (2.0, 2.5)
    early = analyse(Timeline(0.0, agent((2.3, 8.0)), [u("split", 1.0, 4.0, pause)], 20.0))
    assert (early.premature, early.pauses) == (1, 1)
    assert early.over_caller == 0  # it began in the pause: premature, not over the caller
    late = analyse(Timeline(0.0, agent((4.6, 8.0)), [u("split", 1.0, 4.0, pause)], 20.0))
    assert (late.premature, late.pauses, late.over_caller) == (0, 1, 0)
    assert late.v2v_ms == [pytest.approx(600, abs=1)]


def test_backchannel_stops() -> None:
    # Resumed within 2 s and heard in full: went on.
    went_on = analyse(
        Timeline(0.0, agent((1.0, 3.2), (4.0, 9.0)), [u("backchannel", 3.0, 3.4, expected=7000)], 20.0)
    )
    assert (went_on.backchannel_stops, went_on.backchannels) == (0, 1)
    # Silent for the 2 s after it: stopped.
    silent = analyse(
        Timeline(0.0, agent((1.0, 3.2), (6.0, 9.0)), [u("cough", 3.0, 3.2, expected=7000)], 20.0)
    )
    assert (silent.backchannel_stops, silent.backchannels) == (1, 1)
    # Resumed, but the rest of the reply never came: cut.
    cut = analyse(
        Timeline(0.0, agent((1.0, 3.2), (4.0, 4.5)), [u("backchannel", 3.0, 3.4, expected=7000)], 20.0)
    )
    assert cut.backchannel_stops == 1
    # Said while the agent was silent: not judged.
    idle = analyse(Timeline(0.0, agent((1.0, 2.0)), [u("backchannel", 5.0, 5.4)], 20.0))
    assert idle.backchannels == 0


def tones(freqs: list[int], step_s: float, seed: int) -> np.ndarray:
    """A made-up utterance: one tone per step (a spectral outline that changes), with some noise."""
    rng = np.random.default_rng(seed)
    parts = [np.sin(2 * np.pi * f * np.arange(int(step_s * 8000)) / 8000) for f in freqs]
    audio = np.concatenate(parts) * 8000 + rng.normal(0, 300, sum(len(p) for p in parts))
    return audio.astype(np.int16)


SENTENCE = [300, 900, 2000, 500, 3000, 1200, 700, 2500, 400, 1800, 3500, 600, 1500, 250, 2200, 800]


def test_dtw_tells_the_same_words_from_others() -> None:
    same = dtw_distance(tones(SENTENCE, 0.1, 1), tones(SENTENCE, 0.11, 2) // 3)  # slower and quieter
    other = dtw_distance(tones(SENTENCE, 0.1, 1), tones(SENTENCE[::-1], 0.1, 3))
    assert same < RESTART_DISTANCE < 0.15 < other
    assert dtw_distance(tones(SENTENCE, 0.1, 1), np.zeros(100, dtype=np.int16)) == 1.0


def test_a_new_turn_after_a_backchannel_is_a_stop() -> None:
    reply = tones(SENTENCE, 0.1, 4)  # how the playbook's reply begins
    packets = agent((1.0, 3.2), (4.5, 12.0), until=20.0)

    def heard(after: np.ndarray) -> list[np.ndarray]:
        audio = [np.zeros(160, dtype=np.int16) for _ in packets]
        first = round(4.5 / P)
        for k in range(len(after) // 160):
            audio[first + k] = after[k * 160 : (k + 1) * 160]
        return audio

    said = [u("backchannel", 3.0, 3.4, expected=7000)]
    # The reply begins again from the start (as Piper says it anew: a little slower): a new turn.
    restarted = Timeline(0.0, packets, said, 20.0, heard(tones(SENTENCE, 0.105, 5)))
    assert analyse(restarted, [reply]).backchannel_stops == 1
    # Other words after the backchannel: the reply went on.
    went_on = Timeline(0.0, packets, said, 20.0, heard(tones(SENTENCE[5:] + SENTENCE[:5], 0.1, 6)))
    assert analyse(went_on, [reply]).backchannel_stops == 0


def test_summary_line() -> None:
    assert percentile([], 50) is None
    assert percentile([5, 1, 4, 2, 3], 50) == 3 and percentile(range(1, 11), 90) == 9
    a = analyse(Timeline(0.0, agent((0.2, 1.0), (5.5, 9.0)), [u("question", 4.0, 5.0)], 20.0))
    b = analyse(Timeline(0.0, agent((0.3, 1.0), (5.8, 9.0)), [u("split", 3.0, 5.0, (3.5, 4.0))], 20.0))
    line = format_summary("", summarize([a, b]))
    assert line == (
        "turns: v2v_p50_ms=500 v2v_p90_ms=800 over_caller=0 premature=0/1 backchannel_stops=0/0 "
        "missed_interruptions=0/0 bargein_p90_ms=NA first_greeting_ms=300"
    )
    assert format_summary("cached", summarize([a])).startswith("turns[cached]: v2v_p50_ms=500 ")


def test_a_reply_begun_anew_is_counted() -> None:
    answer = tones(SENTENCE, 0.1, 7)
    packets = agent((5.3, 5.6), (6.4, 12.0), until=20.0)
    audio = [np.zeros(160, dtype=np.int16) for _ in packets]
    first = round(6.4 / P)
    again = tones(SENTENCE, 0.1, 8)
    for k in range(len(again) // 160):
        audio[first + k] = again[k * 160 : (k + 1) * 160]
    said = [u("split", 3.0, 5.0, (3.5, 4.0))]
    figures = analyse(Timeline(0.0, packets, said, 20.0, audio), [answer])
    assert figures.restarts == 1 and figures.premature == 0
    assert figures.v2v_ms == [pytest.approx(300, abs=1)]
    assert analyse(Timeline(0.0, packets, said, 20.0, audio), []).restarts == 0


def test_a_reply_begun_anew_without_a_break() -> None:
    # 300 ms of one answer, 100 ms of silence, then an answer from its start: one stretch of talk.
    packets = agent((5.3, 5.6), (5.7, 12.0), until=20.0)
    audio = [np.zeros(160, dtype=np.int16) for _ in packets]
    start, again = round(5.3 / P), tones(SENTENCE, 0.1, 9)
    for k in range(round(0.3 / P) + 1):
        audio[start + k] = tones(SENTENCE[::-1], 0.1, 10)[k * 160 : (k + 1) * 160]
    first = round(5.7 / P)
    for k in range(len(again) // 160):
        audio[first + k] = again[k * 160 : (k + 1) * 160]
    figures = analyse(
        Timeline(0.0, packets, [u("question", 4.0, 5.0)], 20.0, audio), [tones(SENTENCE, 0.1, 7)]
    )
    assert len(segments(packets)) == 1 and figures.restarts == 1
