"""Text cues: does the partial transcript so far read like a finished sentence?

The recogniser gives no punctuation (PocketSphinx, Vosk), so the cues look at words. The strongest one
is the last word: some words almost never end an English sentence. The lists below follow the
PocketSphinx en-us language model (a large corpus of English): its probability of the end of a
sentence after a word, P(</s> | w), is 0.075 on average, while every word of ``TRAILING`` scores at most
0.04 (the 0.003-0.01: thank, an, the, my, your, our, I, a, if; 0.01-0.02: of, to, at, would, has,
had, and, was, for; 0.02-0.04: with, can, are, will, because, is, or, need, want, like, but) and every
word of ``CLOSERS`` at least 0.2 (please 0.21, yes 0.22, okay 0.24, thanks 0.28, tomorrow 0.34, today
0.34, tonight 0.39). ``bench/bench_turn_detector.py --lm-table`` prints these figures.

Exceptions, where the data would mislead on a phone line:
- fillers (um, uh, er) end many transcribed sentences in a corpus, but a caller who pauses on one is
  holding the floor (Clark and Fox Tree, 2002): unfinished;
- "so" (0.07) ends "I think so" but mostly leads on ("so, um"): unfinished unless a verb of opinion
  comes before it; "to" after "like", "want", "going", "have" is unfinished (0.008-0.02);
- words that often end a phrase as particles (up, in, on, out, it, that, this, do, am, all) are left
  neutral, they end "pick it up", "I do", "yes I am".

A finished cue is weaker evidence than an unfinished one: "I'd like to book an appointment" may go on
with "for Tuesday". So a question opener or a content word at the end after three words or more only
counts as ``likely finished``; a closer, a one-word answer or final punctuation (from an engine that
gives it) counts as ``finished``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final


class Cue(enum.Enum):
    UNFINISHED = "unfinished"
    NEUTRAL = "neutral"
    LIKELY_FINISHED = "likely_finished"
    FINISHED = "finished"


def _words(*groups: str) -> frozenset[str]:
    return frozenset(word for group in groups for word in group.split())


FILLERS: Final = frozenset({"um", "uh", "er", "erm", "uhm", "hmm", "mm", "ah"})
TRAILING: Final = _words(
    "a an the my your our their his every some any no",  # articles, possessives, quantifiers
    "and or but because if than as when while whether",  # conjunctions and subordinators
    "of to for with at from by into onto during without between about",  # prepositions
    "is are was were been being would could should shall must might has had will can",  # auxiliaries
    "i we they he she",  # subject pronouns
    "want need like let get make gonna wanna thank",  # verbs that announce an object
)
# "about" ends "what is it about": only a question opener keeps it from meaning unfinished.
OPINION_VERBS: Final = frozenset({"think", "hope", "guess", "believe", "suppose", "said", "say", "so"})
CLOSERS: Final = _words(
    "please thanks today tomorrow tonight yes yeah yep nope okay ok right bye goodbye fine too again",
    "morning afternoon evening week month year sure",
)
CLOSING_PHRASES: Final = ("thank you", "that's all", "that is all", "that's it", "no thanks")
ONE_WORD_ANSWERS: Final = _words(
    "yes yeah yep no nope okay ok sure right correct hello hi bye goodbye thanks fine great"
)
QUESTION_OPENERS: Final = (
    "what", "when", "where", "who", "whom", "whose", "why", "how", "which",
    "can you", "could you", "would you", "will you", "do you", "does", "did you", "is there",
    "are there", "are you", "is it", "is that", "can i", "could i", "may i", "should i",
)  # fmt: skip
MIN_WORDS_FOR_LIKELY: Final = 3

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class TextCue:
    cue: Cue
    reason: str


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def text_cue(text: str) -> TextCue:
    """What the words say about the end of the turn (the reason names the rule that fired)."""
    stripped = text.strip()
    if stripped.endswith((",", "-", "...", "…")):
        return TextCue(Cue.UNFINISHED, "trailing comma or dash")
    words = words_of(stripped)
    if not words:
        return TextCue(Cue.NEUTRAL, "no words")
    last = words[-1]
    before = words[-2] if len(words) > 1 else ""
    if last in FILLERS:
        return TextCue(Cue.UNFINISHED, f"filler {last!r}")
    if last == "so" and before not in OPINION_VERBS:
        return TextCue(Cue.UNFINISHED, "trailing 'so'")
    if last in TRAILING and not (last == "about" and _is_question(words)):
        return TextCue(Cue.UNFINISHED, f"trailing {last!r}")
    if stripped.endswith((".", "?", "!")):
        return TextCue(Cue.FINISHED, "final punctuation")
    joined = " ".join(words)
    if len(words) == 1 and last in ONE_WORD_ANSWERS:
        return TextCue(Cue.FINISHED, f"one-word answer {last!r}")
    if last in CLOSERS or joined.endswith(CLOSING_PHRASES):
        return TextCue(Cue.FINISHED, f"closing {last!r}")
    if len(words) >= MIN_WORDS_FOR_LIKELY:
        if _is_question(words):
            return TextCue(Cue.LIKELY_FINISHED, "question")
        return TextCue(Cue.LIKELY_FINISHED, f"ends on {last!r}")
    return TextCue(Cue.NEUTRAL, "short")


def _is_question(words: list[str]) -> bool:
    opening = " ".join(words[:2])
    return any(opening == q or opening.startswith(q + " ") or words[0] == q for q in QUESTION_OPENERS)
