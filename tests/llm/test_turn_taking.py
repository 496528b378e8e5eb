"""Turn-taking in the conversation: one reply per caller turn, a reply held while the caller speaks,
backchannels and noises that let the agent go on, real words that stop it, prompts the caller cannot
interrupt, and each answer's stages timed.

The llm service runs for real over a real Redis; the test plays the other services on the bus (the
asr's finals and partials, the media worker's playback and speech events, the tts's durations).
"""

from __future__ import annotations

import time
from typing import Any

from llm_harness import MEDIA, Harness, wait_for

from activecall.llm.timings import STAGES
from activecall.messages import (
    BargeIn,
    DtmfReceived,
    Message,
    PlaybackPaused,
    PlaybackStarted,
    ResumePlayback,
    SaySynthesized,
    SpeechStarted,
    SpeechStopped,
    StopPlayback,
    TranscriptFinal,
    TranscriptPartial,
    TurnCancelled,
    TurnStarted,
    TurnTimings,
)
from activecall.store import CallStore

PLAYBOOK = """---
greeting: "Hello, this is the shop. How can I help?"
interruption:
  uninterruptible: [greeting]
rules:
  - match: 'opening hours'
    say: We are open from nine to five. On Saturdays we close at one.
  - keywords: [price, cost]
    say: It costs ten pounds.
fallback: Sorry, could you say that again?
dtmf:
  "1":
    action: say
    text: You pressed one.
---
"""


async def start_call(harness: Harness) -> None:
    await harness.start()
    await harness.call("c1", harness.playbook("shop.md", PLAYBOOK))
    await harness.wait_closed("c1", "greeting")
    await harness.emit("c1", PlaybackStarted(turn_id="greeting"))


async def final(harness: Harness, text: str, **fields: Any) -> str:
    return "t" + await harness.emit("c1", TranscriptFinal(text=text, **fields))


async def media_commands(harness: Harness) -> list[Message]:
    return await harness.read(harness.bus.keys.media_control(MEDIA))


async def wait_media(harness: Harness, kind: type[Message]) -> list[Any]:
    async def check() -> list[Any]:
        return [m for m in await media_commands(harness) if isinstance(m, kind)]

    result: list[Any] = await wait_for(check, f"{kind.TYPE} on the media worker's control stream")
    return result


async def spoken(harness: Harness, turn_id: str) -> str:
    return " ".join(text for _, text, _ in await harness.wait_closed("c1", turn_id) if text)


async def user_messages(harness: Harness) -> list[str]:
    return [m["content"][0]["text"] for m in await harness.history("c1") if m["role"] == "user"]


async def test_finals_before_the_reply_is_heard_get_one_reply(harness: Harness) -> None:
    await start_call(harness)
    first = await final(harness, "what are your")
    assert await spoken(harness, first) == "Sorry, could you say that again?"  # ready, not yet heard
    second = await final(harness, "opening hours")
    assert await spoken(harness, second) == "We are open from nine to five. On Saturdays we close at one."
    (withdrawn,) = await harness.wait_event("c1", TurnCancelled)
    assert (withdrawn.turn_id, withdrawn.reason) == (first, "withdrawn")
    assert [m.turn_id for m in await wait_media(harness, StopPlayback)] == [first]
    history = await harness.committed("c1", second)
    assert [m["turn_id"] for m in history] == ["greeting", second, second]
    assert await user_messages(harness) == ["what are your opening hours"]
    record = await CallStore(harness.bus.redis, harness.bus.keys).get("c1")
    assert record is not None
    assert [line["speaker"] for line in record.transcript] == ["agent", "caller", "agent"]
    assert "Sorry" not in " ".join(line["text"] for line in record.transcript)


async def test_a_reply_heard_is_not_taken_back(harness: Harness) -> None:
    await start_call(harness)
    first = await final(harness, "what is the price")
    await spoken(harness, first)
    await harness.emit("c1", PlaybackStarted(turn_id=first))
    second = await final(harness, "opening hours")
    await spoken(harness, second)
    assert await user_messages(harness) == ["what is the price", "opening hours"]
    assert not await harness.events("c1", TurnCancelled)


async def test_a_reply_is_held_while_the_caller_speaks_and_merged_with_what_follows(harness: Harness) -> None:
    await start_call(harness)
    first = await final(harness, "I would like to know the")
    await harness.wait_closed("c1", first)
    await harness.emit("c1", SpeechStarted(at_ms=5000))  # the caller goes on before hearing it
    (withdrawn,) = await harness.wait_event("c1", TurnCancelled)
    assert withdrawn.turn_id == first
    await harness.emit("c1", SpeechStopped(at_ms=5600))
    second = await final(harness, "opening hours please")
    assert await spoken(harness, second) == "We are open from nine to five. On Saturdays we close at one."
    await harness.committed("c1", second)
    assert await user_messages(harness) == ["I would like to know the opening hours please"]


async def test_a_held_reply_is_said_after_all_when_only_a_noise_followed(harness: Harness) -> None:
    await start_call(harness)
    first = await final(harness, "what is the price")
    await harness.wait_closed("c1", first)
    await harness.emit("c1", SpeechStarted(at_ms=5000))
    await harness.wait_event("c1", TurnCancelled)
    await harness.emit("c1", SpeechStopped(at_ms=5300))
    await final(harness, "")  # a cough: no words
    assert await spoken(harness, f"{first}-1") == "It costs ten pounds."
    await harness.committed("c1", f"{first}-1")
    assert await user_messages(harness) == ["what is the price"]


async def playing_answer(harness: Harness, question: str) -> str:
    """An answer the caller is hearing, paused by the media worker for their speech."""
    await start_call(harness)
    turn = await final(harness, question)
    await harness.wait_closed("c1", turn)
    await harness.emit("c1", PlaybackStarted(turn_id=turn))
    await harness.emit("c1", PlaybackPaused(turn_id=turn, played_ms=900))
    await harness.emit("c1", SpeechStarted(at_ms=8000))
    return turn


async def test_a_backchannel_over_the_agent_lets_it_go_on(harness: Harness) -> None:
    turn = await playing_answer(harness, "opening hours")
    await harness.emit("c1", TranscriptPartial(text="uh huh"))
    await harness.emit("c1", SpeechStopped(at_ms=8400))
    (resume,) = await wait_media(harness, ResumePlayback)
    assert resume.turn_id == turn
    await final(harness, "uh-huh")
    await harness.emit("c1", TranscriptFinal(text="okay"))  # the recognizer's other reading
    key = "t" + await harness.emit("c1", DtmfReceived(digit="1"))  # answered: everything before was read
    assert await spoken(harness, key) == "You pressed one."
    assert not [m for m in await media_commands(harness) if isinstance(m, StopPlayback)]
    started = [e.turn_id for e in await harness.events("c1", TurnStarted)]
    assert len(started) == 3, started  # the greeting, the answer, the key press: no reply to "uh-huh"


async def test_a_cough_over_the_agent_lets_it_go_on(harness: Harness) -> None:
    turn = await playing_answer(harness, "opening hours")
    await harness.emit("c1", SpeechStopped(at_ms=8250))
    (resume,) = await wait_media(harness, ResumePlayback)
    assert resume.turn_id == turn
    await final(harness, "")
    assert not [m for m in await media_commands(harness) if isinstance(m, StopPlayback)]


async def test_real_words_over_the_agent_stop_it_and_the_history_keeps_what_was_heard(
    harness: Harness,
) -> None:
    turn = await playing_answer(harness, "opening hours")
    await harness.emit("c1", TranscriptPartial(text="wait what about"))
    await harness.emit("c1", SpeechStopped(at_ms=8900))
    (stop,) = await wait_media(harness, StopPlayback)
    assert (stop.turn_id, stop.reason) == (turn, "barge_in")
    await harness.emit("c1", BargeIn(turn_id=turn, played_ms=900))  # the media worker cuts the turn
    (cancelled,) = await harness.wait_event("c1", TurnCancelled)
    assert (cancelled.turn_id, cancelled.reason) == (turn, "barge_in")
    second = await final(harness, "wait what about the price")
    assert await spoken(harness, second) == "It costs ten pounds."
    history = await harness.committed("c1", second)
    cut = [m for m in history if m["turn_id"] == turn and m["role"] == "assistant"]
    assert cut and cut[0]["content"][0]["text"] == "We are"  # 0.9 s at 2.5 words a second
    assert not [m for m in await media_commands(harness) if isinstance(m, ResumePlayback)]


async def test_a_long_speech_over_the_agent_stops_it_whatever_was_recognised(harness: Harness) -> None:
    turn = await playing_answer(harness, "opening hours")
    await harness.emit("c1", SpeechStopped(at_ms=9500))  # 1.5 s of speech is no backchannel
    await harness.emit("c1", TranscriptFinal(text="okay"))
    stops = await wait_media(harness, StopPlayback)
    assert {(stop.turn_id, stop.reason) for stop in stops} == {(turn, "barge_in")}
    assert not [m for m in await media_commands(harness) if isinstance(m, ResumePlayback)]


async def test_an_uninterruptible_prompt_goes_out_marked_so(harness: Harness) -> None:
    await start_call(harness)
    turn = await final(harness, "opening hours")
    await harness.wait_closed("c1", turn)
    pieces = await harness.say("c1")
    assert {p.interruptible for p in pieces if p.turn_id == "greeting"} == {False}
    assert {p.interruptible for p in pieces if p.turn_id == turn} == {True}


async def test_every_stage_of_an_answer_is_timed_key_presses_too(harness: Harness) -> None:
    await start_call(harness)
    decided = time.time()
    spoken_turn = await final(harness, "opening hours", decided_ts=decided, speech_end_ms=4000)
    await harness.wait_closed("c1", spoken_turn)
    await harness.emit("c1", SaySynthesized(turn_id=spoken_turn, seq=0, duration_ms=900, chars=20))
    await harness.emit("c1", PlaybackStarted(turn_id=spoken_turn, latency_ms=450))
    key_turn = "t" + await harness.emit("c1", DtmfReceived(digit="1"))
    await harness.wait_closed("c1", key_turn)
    await harness.emit("c1", SaySynthesized(turn_id=key_turn, seq=0, duration_ms=900, chars=16))
    await harness.emit("c1", PlaybackStarted(turn_id=key_turn, latency_ms=300))
    timings = {t.turn_id: t for t in await harness.wait_event("c1", TurnTimings, 2)}
    stages = list(STAGES)
    for turn_id, kind, latency in ((spoken_turn, "speech", 450), (key_turn, "dtmf", 300)):
        timing = timings[turn_id]
        assert timing.kind == kind and list(timing.stages) == stages, timing
        assert timing.stages["first_packet"] == latency
        in_order = [timing.stages[stage] for stage in stages[:4]]  # stamped one after the other
        assert in_order == sorted(in_order), timing.stages
    record = await CallStore(harness.bus.redis, harness.bus.keys).get("c1")
    assert record is not None
    assert record.timings[f"turn_latency:{spoken_turn}"] == 0.45
    assert {f"turn:{key_turn}:{stage}" for stage in stages} <= set(record.timings)


async def test_a_preemptive_final_holds_the_replys_first_piece(harness: Harness) -> None:
    await start_call(harness)
    turn = await final(harness, "opening hours", reply_at_ms=5150)
    await harness.wait_closed("c1", turn)
    pieces = [p for p in await harness.say("c1") if p.turn_id == turn]
    assert len(pieces) > 1
    assert [p.not_before_ms for p in pieces] == [5150] + [0] * (len(pieces) - 1)
