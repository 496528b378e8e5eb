from __future__ import annotations

import pytest

from activecall.bus import Bus
from activecall.llm.followup import SilenceClock
from activecall.llm.history import CallState, EndAction
from activecall.llm.providers import ToolCall
from activecall.llm.speech import Speaker, sent_pieces
from activecall.llm.tools import TOOL_NAMES, ToolOutcome, ToolRunner, tool_definitions
from activecall.messages import SendDtmf, TurnStarted
from activecall.playbook import parse_playbook
from activecall.store import CallRecord, CallStore

PLAYBOOK = parse_playbook("# Scene: a\nA.\n\n# Scene: b\nB.\n", "two.md")


def test_tool_definitions() -> None:
    tools = tool_definitions(PLAYBOOK)
    assert [t["name"] for t in tools] == list(TOOL_NAMES)
    goto = tools[3]["input_schema"]
    assert goto == {
        "type": "object",
        "properties": {"scene": {"type": "string", "enum": ["a", "b"]}},
        "required": ["scene"],
    }
    assert tools[1]["input_schema"]["required"] == ["target"]
    with_default = tool_definitions(parse_playbook('---\ntransfer_target: "sip:d@x"\n---\nHi.\n'))
    assert "required" not in with_default[1]["input_schema"]
    assert with_default[1]["input_schema"]["properties"]["target"]["description"].endswith("default sip:d@x")


@pytest.mark.parametrize(
    ("name", "arguments", "outcome", "state"),
    [
        ("goto_scene", {"scene": "b"}, ToolOutcome("Now in scene b."), CallState(scene="b")),
        ("goto_scene", {"scene": "z"}, ToolOutcome("no scene 'z'; scenes: a, b", is_error=True), CallState()),
        (
            "set_variable",
            {"name": "n", "value": 7},
            ToolOutcome("n is set."),
            CallState(variables={"n": "7"}),
        ),
        (
            "set_variable",
            {"name": "caller", "value": "x"},
            ToolOutcome(
                "'caller' cannot be set: use letters, digits and _, not "
                "caller, callee, call_id, direction, sip",
                is_error=True,
            ),
            CallState(),
        ),
        (
            "hangup",
            {},
            ToolOutcome("The call ends once your last words have been heard.", ends_call=True),
            CallState(pending_end=EndAction("hangup", turn_id="t1", reason="agent")),
        ),
        (
            "transfer",
            {},
            ToolOutcome("no target given and the call script has no transfer_target", is_error=True),
            CallState(),
        ),
        (
            "transfer",
            {"target": "sip:x@y"},
            ToolOutcome(
                "The call is transferred to sip:x@y once your last words have been heard.", ends_call=True
            ),
            CallState(pending_end=EndAction("transfer", turn_id="t1", target="sip:x@y")),
        ),
        (
            "send_dtmf",
            {"digits": "12x"},
            ToolOutcome("digits must be 1 to 32 of 0-9, *, #, A-D; got '12X'", is_error=True),
            CallState(),
        ),
        (
            "send_dtmf",
            {"digits": "1"},
            ToolOutcome("the call has no media worker to send key presses", is_error=True),
            CallState(),
        ),
        ("format_disk", {}, ToolOutcome("unknown tool 'format_disk'", is_error=True), CallState()),
    ],
)
async def test_tools(
    bus: Bus, name: str, arguments: dict[str, object], outcome: ToolOutcome, state: CallState
) -> None:
    runner = ToolRunner(bus, "c1", PLAYBOOK, CallState())
    assert await runner.run(ToolCall("toolu_1", name, arguments), "t1") == outcome
    assert runner.state == state


async def test_send_dtmf_goes_to_the_call_s_media_worker(bus: Bus) -> None:
    await CallStore(bus.redis, bus.keys).create(CallRecord("c1", "inbound", media_worker="m7"))
    runner = ToolRunner(bus, "c1", PLAYBOOK, CallState())
    assert await runner.run(ToolCall("toolu_1", "send_dtmf", {"digits": "9 a#"}), "t1") == ToolOutcome(
        "Sent 9A#."
    )
    (entry,) = await bus.read({bus.keys.media_control("m7"): "0"})
    assert isinstance(entry.message, SendDtmf) and (entry.message.call_id, entry.message.digits) == (
        "c1",
        "9A#",
    )


async def test_a_resumed_turn_skips_the_pieces_already_sent(bus: Bus) -> None:
    first = Speaker(bus, "c1", "t5")
    await first.say("One.")
    await first.say("Two.")
    sent = await sent_pieces(bus, "c1", "t5")
    assert {seq: (p.text, p.last) for seq, p in sent.items()} == {0: ("One.", False), 1: ("Two.", False)}
    assert await sent_pieces(bus, "c1", "t6") == {}
    second = Speaker(bus, "c1", "t5", sent)
    await second.say("Uno.")
    await second.close()
    assert second.pieces == [(0, "One."), (1, "Two.")]
    stream = await bus.read({bus.keys.say("c1"): "0"})
    assert [(m.message.seq, m.message.text, m.message.last) for m in stream] == [  # type: ignore[attr-defined]
        (0, "One.", False),
        (1, "Two.", False),
        (2, "", True),
    ]
    events = await bus.read({bus.keys.events("c1"): "0"})
    assert [type(e.message) for e in events] == [TurnStarted]


def test_the_silence_clock() -> None:
    clock = SilenceClock(timeout_s=5.0)
    assert clock.due_at() is None
    clock.agent_spoke("t1", now=100.0, estimated_s=2.0)
    assert clock.due_at() == 100.0 + 2.0 * 1.5 + 1.0 + 5.0  # no playback report yet: the estimate
    clock.playback_finished("t0", now=101.0)  # another turn's report changes nothing
    assert clock.due_at() == 109.0
    clock.playback_finished("t1", now=101.5)
    assert clock.due_at() == 106.5
    clock.caller_started()
    assert clock.due_at() is None
    clock.caller_stopped(now=110.0)
    assert clock.due_at() == 115.0
    clock.busy()
    assert clock.due_at() is None
