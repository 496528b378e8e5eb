"""Calls answered by Claude: the real anthropic client against the local Messages API server."""

from __future__ import annotations

import pytest
from llm_harness import MEDIA, GatedServer, Harness, sample, wait_for, wait_sample

from activecall.llm.history import CALL_ANSWERED_NOTE
from activecall.llm.providers.anthropic import SENDS_TEMPERATURE
from activecall.messages import (
    BargeIn,
    CallEnded,
    CallError,
    Hangup,
    PlaybackFinished,
    SaySynthesized,
    SendDtmf,
    TranscriptFinal,
    TurnCancelled,
    TurnStarted,
)
from activecall.sentences import APOLOGY
from activecall.testing.anthropic_server import (
    FakeAnthropicServer,
    Hang,
    Reply,
    Text,
    ToolUse,
    overloaded,
    rate_limited,
    server_error,
    text,
    tool_use,
)

PLAYBOOK = """\
---
greeting: "Hello, your reference is {{ X-Twilio-CallSid }}."
llm:
  model: claude-test
  max_tokens: 123
  temperature: 0.2
variables:
  company: Acme
transfer_target: "sip:desk@pbx.example.com"
---
You are the assistant of {{ company }}.

# Scene: main
Help the caller.

# Scene: billing
Talk about invoices with {{ name | default("the caller") }}.
"""
GREETING = "Hello, your reference is CA42."
VARIABLES = {"X-Twilio-CallSid": "CA42", "caller": "+15550001", "callee": "+15550002", "direction": "inbound"}
TOOL_NAMES = ["hangup", "transfer", "send_dtmf", "goto_scene", "set_variable"]


def said(text_: str) -> dict[str, object]:
    return {"role": "assistant", "content": [{"type": "text", "text": text_}]}


def user(text_: str) -> dict[str, object]:
    return {"role": "user", "content": [{"type": "text", "text": text_}]}


async def start(harness: Harness, srv: FakeAnthropicServer, call_id: str = "c1", **llm: object) -> None:
    settings = {"api_key": "test-key", "base_url": srv.base_url, "timeout": 2.0, "max_retries": 2, **llm}
    await harness.start(**settings)
    await harness.call(call_id, harness.playbook("claude.md", PLAYBOOK), VARIABLES)
    assert await harness.wait_closed(call_id, "greeting") == [(0, GREETING, True)]


async def transcript(harness: Harness, text_: str, call_id: str = "c1") -> str:
    """Say something as the caller; returns the id of the turn that answers it."""
    return "t" + await harness.emit(call_id, TranscriptFinal(text=text_))


async def test_greeting_renders_the_twilio_call_sid(harness: Harness) -> None:
    async with FakeAnthropicServer() as srv:
        await start(harness, srv)
        started = await harness.wait_event("c1", TurnStarted)
        assert [(e.turn_id, e.text) for e in started] == [("greeting", "")]
        assert await wait_for(lambda: harness.history("c1"), "the greeting in the history") == [
            {**said(GREETING), "turn_id": "greeting", "pieces": [[0, GREETING]]}
        ]
        assert srv.requests == []


async def test_a_transcript_is_answered_sentence_by_sentence(harness: Harness) -> None:
    async with FakeAnthropicServer([text("Sure. Dr. Who costs 3.50 dollars... really! Bye")]) as srv:
        await start(harness, srv)
        turn = await transcript(harness, "How much is it?")
        pieces = await harness.wait_closed("c1", turn)
        assert pieces == [
            (0, "Sure.", False),
            (1, "Dr. Who costs 3.50 dollars... really!", False),
            (2, "Bye", False),
            (3, "", True),
        ]
        (request,) = srv.message_requests
        body = request.body
        assert body["model"] == "claude-test"
        assert body["max_tokens"] == 123
        assert body.get("temperature") == (0.2 if SENDS_TEMPERATURE else None)
        assert body["stream"] is True
        assert body["system"] == "You are the assistant of Acme.\n\nHelp the caller."
        assert body["messages"] == [user(CALL_ANSWERED_NOTE), said(GREETING), user("How much is it?")]
        assert [t["name"] for t in body["tools"]] == TOOL_NAMES
        assert request.api_key == "test-key"
        history = await harness.committed("c1", turn)
        assert history[-2:] == [
            {**user("How much is it?"), "turn_id": turn},
            {
                **said("Sure. Dr. Who costs 3.50 dollars... really! Bye"),
                "turn_id": turn,
                "pieces": [[0, "Sure."], [1, "Dr. Who costs 3.50 dollars... really!"], [2, "Bye"]],
            },
        ]


async def test_the_first_sentence_is_said_before_the_answer_is_complete(harness: Harness) -> None:
    answer = Reply((Text("Hello there. How are you?", pieces=("Hello", " there.", " How", " are", " you?")),))
    # The server stops after " How": the first sentence is complete, the answer is not.
    async with GatedServer([answer], hold_after=3) as srv:
        await start(harness, srv)
        turn = await transcript(harness, "Hi")
        assert await harness.wait_said("c1", turn) == [(0, "Hello there.", False)]
        assert srv.held.is_set() and srv.deltas_sent == 3
        srv.release()
        assert await harness.wait_closed("c1", turn) == [
            (0, "Hello there.", False),
            (1, "How are you?", False),
            (2, "", True),
        ]
        assert srv.deltas_sent == 5


async def test_a_hangup_tool_call_hangs_up_once_the_goodbye_has_played(harness: Harness) -> None:
    before = sample("activecall_llm_tool_calls_total", tool="hangup")
    reply = tool_use("hangup", {"reason": "caller said goodbye"}, text="Goodbye!")
    async with FakeAnthropicServer([reply]) as srv:
        await start(harness, srv)
        turn = await transcript(harness, "That's all, bye")
        assert await harness.wait_closed("c1", turn) == [(0, "Goodbye!", False), (1, "", True)]
        assert await harness.edge_commands() == []  # the goodbye has not played yet
        await harness.emit("c1", PlaybackFinished(turn_id=turn, played_ms=900))
        command = await harness.wait_edge_command()
        assert isinstance(command, Hangup)
        assert (command.call_id, command.reason, command.by) == ("c1", "caller said goodbye", "llm")
        assert len(srv.message_requests) == 1  # no request after a hangup
        assert sample("activecall_llm_tool_calls_total", tool="hangup") == before + 1
        history = await harness.history("c1")
        tool_id = history[-2]["content"][1]["id"]
        assert history[-2]["content"] == [
            {"type": "text", "text": "Goodbye!"},
            {"type": "tool_use", "id": tool_id, "name": "hangup", "input": {"reason": "caller said goodbye"}},
        ]
        assert history[-1]["content"] == [
            {
                "type": "tool_result",
                "tool_use_id": tool_id,
                "content": "The call ends once your last words have been heard.",
            }
        ]
        await harness.emit("c1", CallEnded(reason="bye", by="agent"))
        await wait_for(lambda: harness.session_done("c1"), "the session to end")


async def test_tool_results_go_back_in_a_follow_up_request(harness: Harness) -> None:
    first = Reply(
        (
            Text("One moment."),
            ToolUse("set_variable", {"name": "name", "value": "Ada"}, id="toolu_1"),
            ToolUse("goto_scene", {"scene": "billing"}, id="toolu_2"),
            ToolUse("send_dtmf", {"digits": "12#"}, id="toolu_3"),
        )
    )
    async with FakeAnthropicServer([first, text("Your invoice is paid.")]) as srv:
        await start(harness, srv)
        turn = await transcript(harness, "I'm Ada, about my invoice")
        assert await harness.wait_closed("c1", turn) == [
            (0, "One moment.", False),
            (1, "Your invoice is paid.", False),
            (2, "", True),
        ]
        follow_up = srv.message_requests[1].body
        assert follow_up["system"] == "You are the assistant of Acme.\n\nTalk about invoices with Ada."
        assert follow_up["messages"][-1] == {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "name is set."},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "Now in scene billing."},
                {"type": "tool_result", "tool_use_id": "toolu_3", "content": "Sent 12#."},
            ],
        }
        commands = await harness.read(harness.bus.keys.media_control(MEDIA))
        assert [(type(c), c.digits) for c in commands if isinstance(c, SendDtmf)] == [(SendDtmf, "12#")]


async def test_a_bad_tool_call_is_an_error_result(harness: Harness) -> None:
    replies = [tool_use("goto_scene", {"scene": "nowhere"}), text("Let me help here.")]
    async with FakeAnthropicServer(replies) as srv:
        await start(harness, srv)
        turn = await transcript(harness, "Billing please")
        await harness.wait_closed("c1", turn)
        (result,) = srv.message_requests[1].body["messages"][-1]["content"]
        assert result["is_error"] is True
        assert result["content"] == "no scene 'nowhere'; scenes: main, billing"


async def test_barge_in_cuts_the_answer_to_what_was_heard(harness: Harness) -> None:
    story = text("Once upon a time there was a fox. It was quick and clever. The end.")
    # Held after " It": the first sentence has been said, the rest is still being generated.
    async with GatedServer([story], hold_after=9) as srv:
        await start(harness, srv)
        turn = await transcript(harness, "Tell me a story")
        assert await harness.wait_said("c1", turn) == [(0, "Once upon a time there was a fox.", False)]
        before = sample("activecall_llm_turns_total", result="cancelled")
        # 1.2 s at the nominal 2.5 words a second: three words were heard.
        await harness.emit("c1", BargeIn(turn_id=turn, played_ms=1200))
        (cancelled,) = await harness.wait_event("c1", TurnCancelled)
        assert (cancelled.turn_id, cancelled.reason) == (turn, "barge_in")
        srv.release()
        assert sample("activecall_llm_turns_total", result="cancelled") == before + 1
        srv.add(text("Sorry, go ahead."))
        await transcript(harness, "Wait, stop")
        await wait_for(lambda: _count(srv, 2), "the next request")
        assert srv.message_requests[1].body["messages"][-3:] == [
            user("Tell me a story"),
            said("Once upon a"),
            user("Wait, stop"),
        ]
        assert await harness.said("c1", turn) == [(0, "Once upon a time there was a fox.", False)]


async def test_barge_in_after_the_answer_uses_the_synthesized_durations(harness: Harness) -> None:
    async with FakeAnthropicServer([text("The first part. The second part is long."), text("Yes?")]) as srv:
        await start(harness, srv)
        turn = await transcript(harness, "Go on")
        await harness.wait_closed("c1", turn)
        await harness.emit("c1", SaySynthesized(turn_id=turn, seq=0, duration_ms=1000, chars=15))
        await harness.emit("c1", SaySynthesized(turn_id=turn, seq=1, duration_ms=2400, chars=24))
        # All of the first piece and half of the second: 12 of its 24 characters, whole words only.
        await harness.emit("c1", BargeIn(turn_id=turn, played_ms=2200))
        await harness.wait_event("c1", TurnCancelled)
        await transcript(harness, "Hm")
        await wait_for(lambda: _count(srv, 2), "the next request")
        assert srv.message_requests[1].body["messages"][-2] == said("The first part. The second")
        history = await harness.history("c1")
        assert [m for m in history if m["turn_id"] == turn][1] == {
            **said("The first part. The second"),
            "turn_id": turn,
            "pieces": [[0, "The first part."], [1, "The second"]],
            "cut": 2200,
        }


async def test_rate_limits_and_overload_are_retried(harness: Harness) -> None:
    rate = sample("activecall_llm_provider_errors_total", provider="anthropic", kind="rate_limited")
    over = sample("activecall_llm_provider_errors_total", provider="anthropic", kind="overloaded")
    async with FakeAnthropicServer([rate_limited(0.01), overloaded(0.01), text("Here I am.")]) as srv:
        await start(harness, srv)
        turn = await transcript(harness, "Hello?")
        assert await harness.wait_closed("c1", turn) == [(0, "Here I am.", False), (1, "", True)]
        assert len(srv.message_requests) == 3
        assert [r.body for r in srv.message_requests[1:]] == [srv.message_requests[0].body] * 2
    assert (
        sample("activecall_llm_provider_errors_total", provider="anthropic", kind="rate_limited") == rate + 1
    )
    assert sample("activecall_llm_provider_errors_total", provider="anthropic", kind="overloaded") == over + 1


@pytest.mark.parametrize(
    ("script", "kind", "requests"),
    [
        ([Hang()], "timeout", 1),
        ([Hang(partial="Let me")], "timeout", 1),
        ([server_error(0.01), server_error(0.01), server_error(0.01)], "server_error", 3),
    ],
    ids=["hang", "hang-mid-sentence", "retries-exhausted"],
)
async def test_a_failed_request_is_answered_with_an_apology(
    harness: Harness, script: list[object], kind: str, requests: int
) -> None:
    before = sample("activecall_llm_turns_total", result="apology")
    errors = sample("activecall_llm_provider_errors_total", provider="anthropic", kind=kind)
    async with FakeAnthropicServer(script) as srv:  # type: ignore[arg-type]
        await start(harness, srv, timeout=0.3)
        turn = await transcript(harness, "Are you there?")
        assert await harness.wait_closed("c1", turn) == [(0, APOLOGY, True)]
        assert len(srv.message_requests) == requests
        await wait_sample(before + 1, "activecall_llm_turns_total", result="apology")
    assert (
        sample("activecall_llm_provider_errors_total", provider="anthropic", kind=kind) == errors + requests
    )


async def test_a_missing_playbook_reports_an_error_and_hangs_up(harness: Harness) -> None:
    await harness.start()
    await harness.call("c1", "nowhere.md")
    command = await harness.wait_edge_command()
    assert isinstance(command, Hangup) and command.reason == "playbook error"
    (error,) = await harness.events("c1", CallError)
    assert error.source == "llm" and "nowhere.md" in error.error
    await wait_for(lambda: harness.session_done("c1"), "the session to end")


async def _count(srv: FakeAnthropicServer, n: int) -> bool:
    return len(srv.message_requests) >= n
