"""Who has the floor when the caller speaks over the agent: a backchannel, or a real interruption.

The media worker pauses the playing turn as soon as the caller speaks over it (no bus round trip)
and waits for the conversation's word. What the caller said decides it: nothing recognisable (a
cough, a noise) or only words of listening ("uh-huh", "okay", "right") let the agent go on where it
paused; anything else stops the turn. The recognizer's text can lag the speech, so the partial
transcript may stop a turn early (real words are heard) but never resume it: resuming waits for the
end of the caller's speech.

A recognizer trained on sentences often hears a backchannel as some other short word ("uh-huh" as
"a huh" or "the"), so one short word is taken as listening too, unless it is one that asks for the
floor ("wait", "stop", "no").
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
# One word of at most this much speech is a backchannel the recognizer misheard, unless it is one of
# FLOOR_WORDS.
SHORT_WORD_MS: Final = 700
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
        lasted; ``final`` whether the caller's turn is over (the recogniser's final result)."""
        if speech_ms > BACKCHANNEL_MAX_MS:
            return Verdict.INTERRUPTING
        if not self.only_listening(text):
            said = words(text)
            if len(said) > 1 or said[0] in FLOOR_WORDS or speech_ms > SHORT_WORD_MS:
                return Verdict.INTERRUPTING
        return Verdict.LISTENING if final else Verdict.UNDECIDED


def words(text: str) -> list[str]:
    """Lower-case words, with hyphens and punctuation as spaces ("Uh-huh." is "uh huh")."""
    return _WORD.findall(text.lower().replace("-", " "))
