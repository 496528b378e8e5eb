from __future__ import annotations

from activecall.bus import Bus
from activecall.llm.history import (
    CALL_ANSWERED_NOTE,
    CallState,
    ConversationStore,
    EndAction,
    assistant_message,
    drop_unanswered_tools,
    request_messages,
    tool_results_message,
    user_message,
)


def test_request_messages_strip_bookkeeping_merge_roles_and_start_with_the_user() -> None:
    history = [
        assistant_message("greeting", [(0, "Hello.")]),
        assistant_message("f1", [(0, "Still there?")]),
        {**user_message("yes"), "turn_id": "t1"},
        {**tool_results_message([("toolu_1", "done", False)]), "turn_id": "t2"},
        user_message("and?"),
    ]
    assert request_messages(history) == [  # type: ignore[arg-type]
        {"role": "user", "content": [{"type": "text", "text": CALL_ANSWERED_NOTE}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Hello."}, {"type": "text", "text": "Still there?"}],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "yes"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done"},
                {"type": "text", "text": "and?"},
            ],
        },
    ]
    assert history[0] == {  # the history itself is left as it was
        "role": "assistant",
        "content": [{"type": "text", "text": "Hello."}],
        "turn_id": "greeting",
        "pieces": [[0, "Hello."]],
    }


def test_an_answer_with_nothing_said_and_no_tools_is_no_message() -> None:
    assert assistant_message("t1", []) is None
    assert assistant_message("t1", [(0, "")]) is None


def test_tool_results_carry_errors() -> None:
    assert tool_results_message([("a", "ok", False), ("b", "bad", True)])["content"] == [
        {"type": "tool_result", "tool_use_id": "a", "content": "ok"},
        {"type": "tool_result", "tool_use_id": "b", "content": "bad", "is_error": True},
    ]


def test_tool_calls_without_results_are_dropped() -> None:
    use = {"type": "tool_use", "id": "toolu_9", "name": "hangup", "input": {}}
    messages = [user_message("bye"), {"role": "assistant", "content": [use]}]
    assert drop_unanswered_tools(messages) == [user_message("bye")]


async def test_the_store_commits_loads_rewrites_and_finishes(bus: Bus) -> None:
    store = ConversationStore(bus, "c9")
    state = CallState(scene="billing", variables={"name": "Ada"}, greeted=True, started_at=12.5)
    state.pending_end = EndAction("transfer", turn_id="t1", target="sip:a@b")
    first = [user_message("hi"), assistant_message("t1", [(0, "Hello.")])]
    await store.commit(first, state, ["1-0"])  # type: ignore[arg-type]
    await store.commit([], state, ["2-0"])
    history, loaded, answered = await store.load()
    assert history == first
    assert loaded == state
    assert answered == {"1-0", "2-0"}
    await store.rewrite([user_message("hi")], CallState())
    history, loaded, _ = await store.load()
    assert (history, loaded) == ([user_message("hi")], CallState())
    assert 0 < await bus.redis.ttl(bus.keys.history("c9")) <= 24 * 3600
    await store.finish()
    assert await bus.redis.ttl(bus.keys.history("c9")) > 24 * 3600
    assert await store.load() == ([user_message("hi")], CallState(), set())
