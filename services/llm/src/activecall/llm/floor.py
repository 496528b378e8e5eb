"""Who has the floor when the caller speaks over the agent: a backchannel, or a real interruption.

The media worker pauses the playing turn as soon as the caller speaks over it (no bus round trip),
so the agent is silent at once whatever the speech turns out to be; the conversation then decides,
with no hurry, whether the agent goes on where it paused or stops. Nothing recognisable (a cough, a
noise) or only words of listening ("uh-huh", "okay", "right") let it go on; anything else stops it.

The recognizer is unreliable on short sounds: it heard "uh-huh" as "ah" and "mm-hmm" as "enema" (the
end-to-end test, bench-turns). So the length of the speech counts more than its words: speech
that goes on past :data:`SHORT_MS` with words that are not backchannels, or past
:data:`BACKCHANNEL_MAX_MS` whatever the words, is an interruption; a short one is a backchannel
unless a word asks for the floor ("wait", "stop", "no"). Partial transcripts only stop a turn once
the speech is that long; resuming waits for the end of the caller's speech.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum
from typing import Final

_WORD: Final = re.compile(r"[a-z']+")
# Longer than this, speech over the agent is taken as a bid for the floor whatever was recognised:
# backchannels are short ("uh-huh" is about 400 ms).
BACKCHANNEL_MAX_MS: Final = 1200
# Speech shorter than this is a backchannel the recognizer misheard, unless a word is one of
# FLOOR_WORDS. The media worker's VAD counts its hangover in, so a backchannel measures longer.
SHORT_MS: Final = 800
FLOOR_WORDS: Final = frozenset(
    ("wait", "stop", "no", "nope", "hold", "hang", "sorry", "excuse", "pardon", "hey", "hello", "what")
    + ("why", "how", "but", "actually")
)


class Verdict(Enum):
    LISTENING = "listening"  # a backchannel or a noise: the agent goes on
    INTERRUPTING = "interrupting"  # real words: the agent stops
    UNDECIDED = "undecided"  # nothing to go on yet


class Backchannels:
    """A playbook's backchannel vocabulary, phrases of one or more words."""

    def __init__(self, phrases: Iterable[str]) -> None:
        self.phrases = {tuple(words(phrase)) for phrase in phrases if words(phrase)}
        self.longest = max((len(p) for p in self.phrases), default=1)

    def only_listening(self, text: str) -> bool:
        """True when ``text`` is nothing but backchannel phrases (or no words at all)."""
        remaining = words(text)
        while remaining:
            for size in range(min(self.longest, len(remaining)), 0, -1):
                if tuple(remaining[:size]) in self.phrases:
                    remaining = remaining[size:]
                    break
            else:
                return False
        return True

    def judge(self, text: str, speech_ms: int, final: bool) -> Verdict:
        """What the caller's speech over the agent means so far. ``speech_ms`` is how long it has
        lasted; ``final`` whether it is over (its speech stopped, or the recognizer's final result)."""
        if speech_ms > BACKCHANNEL_MAX_MS:
            return Verdict.INTERRUPTING
        if self.only_listening(text):
            return Verdict.LISTENING if final else Verdict.UNDECIDED
        said = words(text)
        if speech_ms > SHORT_MS:
            return Verdict.INTERRUPTING
        if not final:
            return Verdict.UNDECIDED
        if any(word in FLOOR_WORDS for word in said):
            return Verdict.INTERRUPTING
        return Verdict.LISTENING


def words(text: str) -> list[str]:
    """Lower-case words, with hyphens and punctuation as spaces ("Uh-huh." is "uh huh")."""
    return _WORD.findall(text.lower().replace("-", " "))
