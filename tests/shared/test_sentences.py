from __future__ import annotations

import pytest

from activecall.sentences import SentenceSplitter, is_sentence_end

CASES = [
    ("Hello there. How are you?", ["Hello there.", "How are you?"]),
    ("It costs 3.50 dollars. Cheap!", ["It costs 3.50 dollars.", "Cheap!"]),
    ("Version 2.0.1 is out. Update now.", ["Version 2.0.1 is out.", "Update now."]),
    (
        "Dr. Smith and Mrs. Jones met St. John. Then they left.",
        ["Dr. Smith and Mrs. Jones met St. John.", "Then they left."],
    ),
    (
        "Bring fruit, e.g. apples, i.e. red ones. Thanks.",
        ["Bring fruit, e.g. apples, i.e. red ones.", "Thanks."],
    ),
    ("We open at 9 a.m. and close at 5 p.m. See you!", ["We open at 9 a.m. and close at 5 p.m.", "See you!"]),
    ("Pens, paper, etc. We have all that.", ["Pens, paper, etc.", "We have all that."]),
    ("Wait... what was that? Hmm... Okay.", ["Wait... what was that?", "Hmm...", "Okay."]),
    ("Well… let me think. Right…", ["Well… let me think.", "Right…"]),
    ("J. R. R. Tolkien wrote it. Yes.", ["J. R. R. Tolkien wrote it.", "Yes."]),
    ("Visit example.com today. Bye.", ["Visit example.com today.", "Bye."]),
    ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("Really?! Wow. (It works.) Good.", ["Really?!", "Wow.", "(It works.)", "Good."]),
    ("First line\nSecond line", ["First line", "Second line"]),
    ("Press 1. Or press 2.", ["Press 1.", "Or press 2."]),
    ("No. 5 is ours. Ask for no. 6 too.", ["No. 5 is ours.", "Ask for no. 6 too."]),
    ("   ", []),
]


def split(text: str, step: int | None = None) -> list[str]:
    splitter = SentenceSplitter()
    out: list[str] = []
    pieces = [text] if step is None else [text[i : i + step] for i in range(0, len(text), step)]
    for piece in pieces:
        out += splitter.feed(piece)
    rest = splitter.flush()
    return [*out, rest] if rest else out


@pytest.mark.parametrize(("text", "sentences"), CASES)
def test_sentences(text: str, sentences: list[str]) -> None:
    assert split(text) == sentences


@pytest.mark.parametrize(("text", "sentences"), CASES)
@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_how_the_text_is_cut_into_deltas_does_not_matter(text: str, sentences: list[str], step: int) -> None:
    assert split(text, step) == sentences


def test_a_sentence_is_returned_once_the_next_one_starts() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("It is 3.") == []  # 3. could be 3.5
    assert splitter.feed("5 now.") == []  # the end needs the next word to be sure
    assert splitter.feed(" ") == []
    assert splitter.feed("Next") == ["It is 3.5 now."]
    assert splitter.pending == "Next"
    assert splitter.flush() == "Next"
    assert splitter.flush() is None


def test_a_long_run_without_an_end_is_cut_at_a_comma() -> None:
    splitter = SentenceSplitter(max_chars=40)
    text = "one two three four five, six seven eight nine ten eleven twelve"
    assert splitter.feed(text) == ["one two three four five,"]
    assert splitter.flush() == "six seven eight nine ten eleven twelve"


def test_a_long_run_without_a_comma_is_cut_at_a_space() -> None:
    splitter = SentenceSplitter(max_chars=20)
    assert splitter.feed("aaaa bbbb cccc dddd eeee ffff") == ["aaaa bbbb cccc dddd"]
    assert splitter.flush() == "eeee ffff"


@pytest.mark.parametrize(
    ("before", "run", "next_char", "ends"),
    [
        ("Call Dr", ".", "S", False),
        ("It is done", ".", "T", True),
        ("It is done", ".", "t", False),
        ("and so on etc", ".", "W", True),
        ("and so on etc", ".", "w", False),
        ("Really", "?", "y", True),
        ("Hmm", "...", "o", False),
        ("Hmm", "...", "O", True),
        ("agent J", ".", "S", False),
        ("I have 3", ".", "4", True),
    ],
)
def test_is_sentence_end(before: str, run: str, next_char: str, ends: bool) -> None:
    assert is_sentence_end(before, run, next_char) is ends
