"""The caller's audio and how what it sent is labelled: split questions, coughs, trimming."""

from __future__ import annotations

import random

import numpy as np
import pytest

from turns.caller import Queued, utterance_sent
from turns.metrics import FRAME, speech_frames
from turns.voices import Clip, cough, split_clip, trim


class Fixed:
    """A synthesizer saying each text as some frames of loud noise between quiet edges."""

    def say(self, text: str, voice: str) -> np.ndarray:
        rng = np.random.default_rng(len(text))
        loud = rng.normal(0, 3000, FRAME * len(text)).astype(np.int16)
        return trim(np.concatenate([np.zeros(77, dtype=np.int16), loud, np.full(400, 5, dtype=np.int16)]))


def test_trim_keeps_whole_frames_of_speech() -> None:
    pcm = Fixed().say("abcd", "v")
    assert len(pcm) == 5 * FRAME  # the 77 leading zeros push the speech across five frames
    flags = speech_frames(pcm)
    assert flags[0] and flags[-1]
    assert len(trim(np.zeros(1000, dtype=np.int16))) == 0


@pytest.mark.parametrize("pause_ms", [400, 560, 700])
def test_split_question_pause_is_labelled_exactly(pause_ms: int) -> None:
    clip = split_clip(Fixed(), ("first half", "second"), "v", pause_ms)
    assert clip.pause_frames is not None
    first, last = clip.pause_frames
    assert (last - first + 1) * 20 == pause_ms
    assert not any(speech_frames(clip.pcm)[first : last + 1])
    # Sent on a 20 ms grid from t = 10 s: the labelled pause is the silence, to the millisecond.
    item = Queued(clip, [10.0 + 0.020 * n for n in range(len(clip.pcm) // FRAME)])
    said = utterance_sent(item)
    assert said is not None and said.pause is not None
    assert said.pause[1] - said.pause[0] == pytest.approx(pause_ms / 1000, abs=1e-9)
    assert said.speech_start == 10.0 and said.speech_end == pytest.approx(
        10.0 + 0.020 * (len(clip.pcm) // FRAME - 1)
    )


def test_utterance_not_sent_in_full() -> None:
    clip = Clip("question", "q", "v", Fixed().say("question", "v"))
    assert utterance_sent(Queued(clip, [])) is None
    partial = utterance_sent(Queued(clip, [1.0, 1.02, 1.04]))
    assert partial is not None and partial.speech_end == 1.04


def test_cough_is_a_short_burst() -> None:
    for seed in range(5):
        burst = cough(random.Random(seed))
        assert 100 <= len(burst) / 8 <= 300
        assert np.max(np.abs(burst)) > 10000 and any(speech_frames(burst))
