"""The judge asked once at the first pause of a turn: is the caller's sentence finished?

It adds evidence in log-odds: the Smart Turn model's probability (what the voice does: falling
pitch, lengthened last syllable), the text cue of the partial transcript (what the words do: "the"
does not end a sentence), and the playbook's context (the answers the agent expects: "Tuesday",
"yes please" end a turn however short they are). No single source decides: the model alone is
near chance on phone-line pauses in mid-sentence, the words alone cannot hear intonation. The
verdict only chooses how much silence ends the turn (short when finished, long when not), so a
wrong verdict costs time, never words: speech that resumes during the wait cancels it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from activecall.asr.turn.cues import Cue, TextCue, text_cue, words_of

TURN_MODES: Final = ("silence", "text", "smart_turn")
# Log-odds of each text cue. An unfinished ending outweighs any voice (the model hears "I'd like to,"
# before a comma as finished); a closer outweighs all but a confident voice.
CUE_LOGIT: Final = {Cue.UNFINISHED: -4.0, Cue.NEUTRAL: 0.0, Cue.LIKELY_FINISHED: 0.5, Cue.FINISHED: 2.0}
EXPECTED_LOGIT: Final = 1.5  # the words are one of the playbook's expected answers
MODEL_WEIGHT: Final = 1.0
# The model scores a pause of pause_ms as rather finished whatever was said (it was trained on
# longer trailing silence): its log-odds are shifted down by this before they count.
MODEL_OFFSET: Final = -1.0
MODEL_CLIP: Final = 3.0  # the model's log-odds count up to P = 0.95 either way


class TurnModel(Protocol):
    def probability(self, pcm16: bytes, sample_rate: int) -> float: ...


@dataclass(frozen=True)
class TurnContext:
    """What the call's playbook says callers answer: its ASR phrase hints of two words or more, and
    single words that are not function words (a bare "to" in the hints says nothing about endings)."""

    expected: frozenset[tuple[str, ...]] = field(default_factory=frozenset)

    @classmethod
    def from_hints(cls, hints: Iterable[str]) -> TurnContext:
        from activecall.asr.turn.cues import FILLERS, TRAILING

        phrases = set()
        for hint in hints:
            words = tuple(words_of(hint))
            if len(words) >= 2 or (words and words[0] not in TRAILING | FILLERS and len(words[0]) > 2):
                phrases.add(words)
        return cls(frozenset(phrases))

    def expects(self, text: str) -> bool:
        """The words are an expected answer, or end with an expected phrase of two words or more."""
        words = tuple(words_of(text))
        if not words or not self.expected:
            return False
        if words in self.expected:
            return True
        return any(len(p) >= 2 and words[-len(p) :] == p for p in self.expected if len(p) <= len(words))


@dataclass(frozen=True)
class Verdict:
    finished: bool
    probability: float  # the combined P(finished)
    cue: TextCue
    model_probability: float | None = None
    expected: bool = False


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class Judge:
    """Combines the evidence for one mode: ``text`` (cues and context) or ``smart_turn`` (the model too).
    Thread-safe: it holds no state of its own, and the model's session is thread-safe."""

    def __init__(self, mode: str, model: TurnModel | None = None, context: TurnContext | None = None) -> None:
        if mode not in ("text", "smart_turn"):
            raise ValueError(f"the {mode!r} mode asks no judge")
        if mode == "smart_turn" and model is None:
            raise ValueError("the smart_turn mode needs the model")
        self.mode = mode
        self.model = model
        self.context = context or TurnContext()

    def __call__(self, pcm16: bytes, sample_rate: int, text: str) -> Verdict:
        """``pcm16``: the call's audio up to the pause (the last 8 s are enough); ``text``: the partial."""
        cue = text_cue(text)
        expected = self.context.expects(text)
        score = CUE_LOGIT[cue.cue] + (EXPECTED_LOGIT if expected else 0.0)
        model_p = None
        if self.model is not None and self.mode == "smart_turn":
            model_p = self.model.probability(pcm16, sample_rate)
            model_logit = max(-MODEL_CLIP, min(MODEL_CLIP, logit(model_p)))
            score += MODEL_WEIGHT * model_logit + MODEL_OFFSET
        probability = sigmoid(score)
        return Verdict(probability >= 0.5, probability, cue, model_p, expected)
