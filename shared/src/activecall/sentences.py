"""Cut streamed model text into sentences, so each one can be spoken as soon as it is complete.

A sentence ends at ``.``, ``!``, ``?`` or an ellipsis (``...`` or ``…``), possibly followed by closing
quotes or brackets, then whitespace, or at a line break. The splitter waits for the first character
after that whitespace before deciding, because the decision depends on it:

- ``3.5`` or ``example.com``: no whitespace after the dot, so no end.
- ``Dr. Smith``, ``e.g. this``: a title or a known abbreviation before the dot is no end.
- ``9 a.m. Then``, ``and so on, etc. We``: abbreviations that may end a sentence do so only before
  an upper-case letter.
- ``Wait... what``: an ellipsis ends a sentence only before an upper-case letter.
- ``J. Smith``: a single capital letter before the dot is an initial.

Decisions never depend on how the text was cut into deltas: feeding it in one piece or one character
at a time gives the same sentences. A run of more than ``max_chars`` without an end is cut at the last
comma, semicolon or colon (else the last space), so a model that never stops a sentence still speaks.

The llm sends a text known in full (greeting, rule answer, follow-up, fallback, DTMF line) as the
``say`` pieces :func:`split_text` gives, and :data:`APOLOGY` as one piece; the tts pre-synthesises
the fixed phrases of the playbooks with the same function, so its phrase cache holds exactly the
pieces that will arrive. Both sides use this module so they cannot drift apart.
"""

from __future__ import annotations

from typing import Final

TERMINATORS: Final = ".!?…"
CLOSERS: Final = "\"')]}”’»"
DEFAULT_MAX_CHARS: Final = 250
# Abbreviations after which a period never ends a sentence (compared without the final period).
NEVER_ENDS: Final = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "no", "nos", "nr", "e.g", "i.e",
        "cf", "ca", "approx", "fig", "dept", "tel", "ext", "ref", "vol", "op", "gen", "col", "lt", "capt",
        "sgt", "rev", "hon", "pres", "gov", "sen", "rep", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
        "sep", "sept", "oct", "nov", "dec", "mon", "tue", "tues", "wed", "thu", "thur", "thurs", "fri",
        "sat", "sun",
    }
)  # fmt: skip
# Abbreviations that may end a sentence: they do when an upper-case letter follows.
MAY_END: Final = frozenset(
    {"etc", "inc", "ltd", "co", "corp", "llc", "a.m", "p.m", "u.s", "u.k", "min", "max"}
)
_SOFT_BREAKS: Final = (", ", "; ", ": ")
# Said by the llm, as a single ``say`` piece, when a turn's model request fails before anything was
# said. One piece, not split: the tts pre-synthesises it whole.
APOLOGY: Final = "Sorry, I'm having trouble answering right now. Could you say that again?"


class SentenceSplitter:
    """Feed text deltas, get complete sentences; :meth:`flush` returns what is left at the end."""

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self.max_chars = max_chars
        self._buffer = ""
        self._scan = 0  # where the search for the next end resumes

    def feed(self, text: str) -> list[str]:
        """Add a delta; returns the sentences it completed (stripped, never empty)."""
        self._buffer += text
        sentences: list[str] = []
        while True:
            end = self._next_end()
            if end is None:
                break
            sentence, self._buffer = self._buffer[:end].strip(), self._buffer[end:].lstrip()
            self._scan = 0
            if sentence:
                sentences.append(sentence)
        return sentences

    def flush(self) -> str | None:
        """The unfinished rest, stripped, or None when there is none; the splitter is empty after."""
        rest, self._buffer, self._scan = self._buffer.strip(), "", 0
        return rest or None

    @property
    def pending(self) -> str:
        """Text received and not yet returned as a sentence."""
        return self._buffer

    def _next_end(self) -> int | None:
        """Index just past the next sentence end, or None when more text is needed."""
        buffer = self._buffer
        i = self._scan
        while i < len(buffer):
            char = buffer[i]
            if char == "\n":
                if buffer[:i].strip():
                    return i
            elif char in TERMINATORS:
                decided = self._decide(i)
                if decided is None:
                    self._scan = i  # wait for more text, then look at this terminator again
                    return None
                if decided >= 0:
                    return decided
                i = -decided
                continue
            i += 1
        self._scan = i
        return self._forced_cut()

    def _decide(self, i: int) -> int | None:
        """For a terminator at ``i``: the end index (>= 0), ``-next_scan`` when it is no end, or None
        when the following text has not arrived yet."""
        buffer = self._buffer
        j = i
        while j < len(buffer) and buffer[j] in TERMINATORS:
            j += 1
        while j < len(buffer) and buffer[j] in CLOSERS:
            j += 1
        if j == len(buffer):
            return None
        if not buffer[j].isspace():
            return -j
        k = j
        while k < len(buffer) and buffer[k].isspace():
            k += 1
        if k == len(buffer):
            return None
        if "\n" in buffer[j:k]:
            return j
        run = buffer[i:j].rstrip(CLOSERS)
        return j if is_sentence_end(buffer[:i], run, buffer[k]) else -k

    def _forced_cut(self) -> int | None:
        if len(self._buffer) <= self.max_chars:
            return None
        head = self._buffer[: self.max_chars]
        for mark in _SOFT_BREAKS:
            at = head.rfind(mark)
            if at > 0:
                return at + 1
        at = head.rfind(" ")
        return at if at > 0 else self.max_chars


def split_text(text: str) -> list[str]:
    """A text known in full as the ``say`` pieces the llm sends for it: its sentences, stripped, in
    order (none for a blank text). Streaming the same text through a :class:`SentenceSplitter` in
    any deltas and flushing gives the same list."""
    splitter = SentenceSplitter()
    sentences = splitter.feed(text)
    rest = splitter.flush()
    return [*sentences, rest] if rest else sentences


def is_sentence_end(before: str, run: str, next_char: str) -> bool:
    """Whether the terminator ``run`` after the text ``before`` ends a sentence, given the first
    character after the whitespace that follows it."""
    if "!" in run or "?" in run:
        return True
    if run.startswith("..") or "…" in run:
        return next_char.isupper()
    words = before.split()
    word = words[-1].lstrip("\"'([{“‘«").lower() if words else ""
    if word in NEVER_ENDS:
        return False
    if len(word) == 1 and word.isalpha() and words[-1][-1].isupper():
        return False
    if word in MAY_END or next_char.islower():
        return next_char.isupper()
    return True
