from activecall.llm.conversation import transcript_lines


def test_transcript_lines_keep_who_said_what_and_skip_tool_traffic() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "I would like an appointment"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Sure."},
                {"type": "tool_use", "id": "t", "name": "hangup", "input": {}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
        {"role": "assistant", "content": "Goodbye."},
    ]
    assert transcript_lines(messages) == [  # type: ignore[arg-type]
        ("caller", "I would like an appointment"),
        ("agent", "Sure."),
        ("agent", "Goodbye."),
    ]
