"""Cut an interrupted turn down to what the caller heard.

A barge-in says how much of the turn's audio played (``played_ms``). The turn's text went to ``say``
in pieces (sentences, numbered by ``seq``), and they play in that order, so the pieces are laid end
to end on a time line:

- a piece whose synthesized duration is known (the tts reports it with ``say.synthesized``) lasts
  that long, and the part of it that played is its characters at its own characters-per-second rate;
- any other piece lasts its word count at a nominal speaking rate (150 words a minute, times the
  playbook's ``tts.speed``), and the part that played is the words that fit.

A word cut in the middle counts as not heard. Pieces that start after ``played_ms`` are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from activecall.llm.history import Message, text_block

WORDS_PER_SECOND: Final = 2.5


def piece_ms(text: str, duration_ms: int | None, words_per_s: float) -> float:
    """How long a piece plays: its synthesized duration, else its words at the nominal rate."""
    if duration_ms is not None and duration_ms > 0:
        return float(duration_ms)
    return len(text.split()) / words_per_s * 1000.0


def heard_part(text: str, heard_ms: float, duration_ms: int | None, words_per_s: float) -> str:
    """The start of one piece that plays in ``heard_ms``."""
    if duration_ms is not None and duration_ms > 0:
        chars = int(len(text) * heard_ms / duration_ms)
        if chars >= len(text):
            return text
        head = text[:chars]
        # A word cut in the middle was not heard.
        if chars and not text[chars].isspace():
            head = head.rpartition(" ")[0] if " " in head else ""
        return head.rstrip()
    words = text.split()
    return " ".join(words[: int(heard_ms / 1000.0 * words_per_s + 1e-9)])


def heard_pieces(
    pieces: Sequence[tuple[int, str]],
    played_ms: int,
    durations: Mapping[int, int] | None = None,
    words_per_s: float = WORDS_PER_SECOND,
) -> dict[int, str]:
    """For each piece (seq, text) in playing order, the text the caller heard ("" for none)."""
    durations = durations or {}
    heard: dict[int, str] = {}
    start = 0.0
    for seq, text in sorted(pieces):
        length = piece_ms(text, durations.get(seq), words_per_s)
        if start + length <= played_ms:
            heard[seq] = text
        elif start < played_ms:
            heard[seq] = heard_part(text, played_ms - start, durations.get(seq), words_per_s)
        else:
            heard[seq] = ""
        start += length
    return heard


def cut_turn(
    messages: Sequence[Message],
    played_ms: int,
    durations: Mapping[int, int] | None = None,
    words_per_s: float = WORDS_PER_SECOND,
) -> list[Message]:
    """A turn's messages with the agent's words cut to what was heard. Tool calls and tool results
    stay (they happened); an agent message left with nothing is dropped."""
    pieces = [(int(s), str(t)) for m in messages for s, t in m.get("pieces", ())]
    heard = heard_pieces(pieces, played_ms, durations, words_per_s)
    out: list[Message] = []
    for message in messages:
        if message["role"] != "assistant" or "pieces" not in message:
            out.append(message)
            continue
        cut = _cut_message(message, heard)
        if cut is not None:
            out.append({**cut, "cut": played_ms})
    return out


def _cut_message(message: Message, heard: Mapping[int, str]) -> Message | None:
    kept = [[s, heard.get(int(s), "")] for s, _ in message["pieces"]]
    kept = [p for p in kept if p[1]]
    text = " ".join(t for _, t in kept)
    others: list[dict[str, Any]] = [b for b in message["content"] if b.get("type") != "text"]
    content = ([text_block(text)] if text else []) + others
    if not content:
        return None
    return {**message, "content": content, "pieces": kept}
