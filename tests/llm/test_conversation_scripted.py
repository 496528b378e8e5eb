"""Calls answered by the playbook's rules: docs/examples/ivr.md, follow-ups and the call's time limit."""

from __future__ import annotations

import asyncio

from llm_harness import MEDIA, Harness, sample, wait_for, wait_sample

from activecall.messages import (
    BargeInPolicy,
    DtmfReceived,
    Hangup,
    PlaybackFinished,
    PlaybackStarted,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    Transfer,
    TransferRequested,
)

MENU = "For billing, press 1. For an agent, press 2. To end the call, press 0."


async def dtmf(harness: Harness, digit: str) -> str:
    return "t" + await harness.emit("c1", DtmfReceived(digit=digit))


async def utterance(harness: Harness, text: str) -> str:
    return "t" + await harness.emit("c1", TranscriptFinal(text=text))


async def spoken(harness: Harness, turn_id: str) -> str:
    """The turn's text once it is said in full; the caller hears it (as the media worker reports)."""
    pieces = await harness.wait_closed("c1", turn_id)
    await harness.emit("c1", PlaybackStarted(turn_id=turn_id))
    return " ".join(text for _, text, _ in pieces if text)


async def test_the_ivr_example_runs_on_keys_and_words(harness: Harness) -> None:
    await harness.start()  # no API key: the scripted provider
    await harness.call("c1", "ivr.md")
    assert await harness.wait_closed("c1", "greeting") == [
        (0, "Welcome to Example Corp.", False),
        (1, "For billing, press 1 or say billing.", False),
        (2, "To speak with an agent, press 2.", False),
        (3, "To end the call, press 0.", True),
    ]
    assert await spoken(harness, await dtmf(harness, "1")) == (
        "Billing. To hear your balance, press 1 or say balance. To return to the main menu, press 9."
    )
    # In the billing scene, key 1 is the scene's own rule.
    assert await spoken(harness, await dtmf(harness, "1")) == "Your balance is not available right now."
    assert await spoken(harness, await utterance(harness, "how much do I owe")) == (
        "Your balance is not available right now."
    )
    assert await spoken(harness, await utterance(harness, "back to the menu please")) == f"Main menu. {MENU}"
    assert await spoken(harness, await utterance(harness, "what's the weather")) == (
        f"Sorry, I didn't understand. {MENU}"
    )
    assert await spoken(harness, await dtmf(harness, "*")) == MENU
    transfer_turn = await utterance(harness, "an operator please")
    assert await spoken(harness, transfer_turn) == "Please hold while I connect you with an agent."
    await harness.emit("c1", PlaybackFinished(turn_id=transfer_turn, played_ms=2400))
    command = await harness.wait_edge_command()
    assert isinstance(command, Transfer) and command.target == "sip:support@pbx.example.com"
    (requested,) = await harness.wait_event("c1", TransferRequested)
    assert (requested.target, requested.by) == ("sip:support@pbx.example.com", "llm")
    goodbye = await dtmf(harness, "0")
    assert await spoken(harness, goodbye) == "Thank you for calling Example Corp. Goodbye!"
    await harness.emit("c1", PlaybackFinished(turn_id=goodbye, played_ms=2000))

    async def hung_up() -> list[object]:
        return [c for c in await harness.edge_commands() if isinstance(c, Hangup)]

    (hangup,) = await wait_for(hung_up, "the hangup")
    assert (hangup.reason, hangup.by) == ("dtmf 0", "llm")
    history = await harness.history("c1")
    assert [m["content"][0]["text"] for m in history[1:3]] == [
        "[The caller pressed 1 on the keypad.]",
        "Billing. To hear your balance, press 1 or say balance. To return to the main menu, press 9.",
    ]


FOLLOW_UP = """\
---
greeting: "Hi."
llm: {provider: scripted}
follow_up:
  timeout_s: 0.2
  max_count: 1
  text: "Still there, {{ who }}?"
  final_text: "Bye now."
variables: {who: friend}
fallback: "Okay."
---
A test script.
"""


async def test_silence_brings_follow_ups_then_a_hangup(harness: Harness) -> None:
    await harness.start()
    await harness.call("c1", harness.playbook("follow.md", FOLLOW_UP))
    await harness.wait_closed("c1", "greeting")
    await harness.emit("c1", PlaybackFinished(turn_id="greeting", played_ms=500))
    await harness.emit("c1", SpeechStarted(at_ms=600))
    await asyncio.sleep(0.5)  # more than the timeout, but the caller is speaking
    assert await harness.said("c1", "f1") == []
    await harness.emit("c1", SpeechStopped(at_ms=1100))
    assert await harness.wait_closed("c1", "f1") == [(0, "Still there, friend?", True)]
    # An answer resets the count: the next silence gets a follow-up again, not the final line.
    answer = await utterance(harness, "hmm")
    assert await spoken(harness, answer) == "Okay."
    await harness.emit("c1", PlaybackFinished(turn_id=answer, played_ms=500))
    assert await harness.wait_closed("c1", "f2") == [(0, "Still there, friend?", True)]
    await harness.emit("c1", PlaybackFinished(turn_id="f2", played_ms=900))
    assert await harness.wait_closed("c1", "final") == [(0, "Bye now.", True)]
    assert await harness.edge_commands() == []
    await harness.emit("c1", PlaybackFinished(turn_id="final", played_ms=700))
    command = await harness.wait_edge_command()
    assert isinstance(command, Hangup) and command.reason == "no answer"


async def test_the_call_is_hung_up_at_its_time_limit(harness: Harness) -> None:
    limited = "---\ngreeting: Hi.\nmax_duration_s: 0.3\nllm: {provider: scripted}\n---\nShort calls.\n"
    ok = sample("activecall_llm_turns_total", result="ok")
    await harness.start()
    await harness.call("c1", harness.playbook("limited.md", limited))
    command = await harness.wait_edge_command()
    assert isinstance(command, Hangup) and (command.reason, command.by) == ("max_duration", "llm")
    assert await harness.said("c1", "greeting") == [(0, "Hi.", True)]
    await wait_sample(ok + 1, "activecall_llm_turns_total", result="ok")


async def test_the_playbook_interruption_policy_reaches_the_media_worker(harness: Harness) -> None:
    await harness.start()
    quiet = harness.playbook(
        "quiet.md",
        "---\ngreeting: Hello.\nllm: {provider: scripted}\n"
        "interruption: {enabled: false, guard_ms: 0}\n---\n",
    )
    await harness.call("c1", "ivr.md")
    await harness.call("c2", quiet)

    async def policies() -> list[BargeInPolicy]:
        commands = await harness.read(harness.bus.keys.media_control(MEDIA))
        found = [m for m in commands if isinstance(m, BargeInPolicy)]
        return found if len(found) >= 2 else []

    found = {p.call_id: p for p in await wait_for(policies, "both calls' barge-in policies")}
    # ivr.md: enabled with guard_ms 0 and no minimum speech of its own (-1: the worker's [media] value)
    assert (found["c1"].enabled, found["c1"].guard_ms, found["c1"].min_speech_ms) == (True, 0, -1)
    assert (found["c2"].enabled, found["c2"].guard_ms) == (False, 0)
