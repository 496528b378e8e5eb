from __future__ import annotations

import pytest

from activecall.llm.truncation import cut_turn, heard_part, heard_pieces

PIECES = [(0, "One two three four five."), (1, "Six seven eight nine ten.")]


@pytest.mark.parametrize(
    ("played_ms", "heard"),
    [
        (0, {0: "", 1: ""}),
        (399, {0: "", 1: ""}),
        (400, {0: "One", 1: ""}),  # 2.5 words a second: one word is 400 ms
        (1999, {0: "One two three four", 1: ""}),
        (2000, {0: "One two three four five.", 1: ""}),
        (2800, {0: "One two three four five.", 1: "Six seven"}),
        (4000, {0: "One two three four five.", 1: "Six seven eight nine ten."}),
        (60000, {0: "One two three four five.", 1: "Six seven eight nine ten."}),
    ],
)
def test_words_at_the_nominal_rate(played_ms: int, heard: dict[int, str]) -> None:
    assert heard_pieces(PIECES, played_ms) == heard


def test_a_faster_voice_is_heard_further() -> None:
    assert heard_pieces(PIECES, 1000, words_per_s=5.0) == {0: "One two three four five.", 1: ""}


def test_synthesized_durations_give_characters_per_second() -> None:
    # Piece 0 lasted 500 ms (24 characters), piece 1 is 25 characters over 2500 ms.
    durations = {0: 500, 1: 2500}
    assert heard_pieces(PIECES, 500, durations) == {0: "One two three four five.", 1: ""}
    # 1200 ms into piece 1: 12 of 25 characters, "Six seven ei": the cut word is dropped.
    assert heard_pieces(PIECES, 1700, durations) == {0: "One two three four five.", 1: "Six seven"}
    # A piece without a duration falls back to words.
    assert heard_pieces(PIECES, 900, {1: 2500}) == {0: "One two", 1: ""}


@pytest.mark.parametrize(
    ("heard_ms", "text"),
    [
        (0, ""),
        (100, ""),
        (400, "Hello"),
        (450, "Hello"),
        (1000, "Hello there you"),
        (1100, "Hello there you"),
    ],
)
def test_heard_part_by_characters(heard_ms: int, text: str) -> None:
    assert heard_part("Hello there you", heard_ms, 1000, 2.5) == text


def test_cut_turn_keeps_tool_calls_and_drops_what_was_not_heard() -> None:
    tool = {"type": "tool_use", "id": "toolu_1", "name": "goto_scene", "input": {"scene": "b"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "One two three four five."}, tool],
            "pieces": [[0, "One two three four five."]],
        },
        {"role": "user", "content": [result]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Six seven eight nine ten."}],
            "pieces": [[1, "Six seven eight nine ten."]],
        },
    ]
    assert cut_turn(messages, 800) == [
        messages[0],
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "One two"}, tool],
            "pieces": [[0, "One two"]],
            "cut": 800,
        },
        messages[2],
    ]
