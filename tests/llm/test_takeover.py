"""Another worker carries a call on: nothing answered twice, nothing said twice, the whole history sent."""

from __future__ import annotations

from llm_harness import GatedServer, Harness, wait_for

from activecall.llm.history import CALL_ANSWERED_NOTE
from activecall.messages import CallEnded, TranscriptFinal
from activecall.testing.anthropic_server import FakeAnthropicServer, text

PLAYBOOK = "---\ngreeting: Hello.\n---\nBe brief.\n"


def message(role: str, text_: str) -> dict[str, object]:
    return {"role": role, "content": [{"type": "text", "text": text_}]}


async def test_a_resumed_session_answers_only_what_is_new(harness: Harness) -> None:
    async with FakeAnthropicServer([text("Answer one."), text("Answer two.")]) as srv:
        llm = {"api_key": "k", "base_url": srv.base_url}
        first = await harness.start("llm-a", **llm)
        await harness.call("c1", harness.playbook("brief.md", PLAYBOOK))
        await harness.wait_closed("c1", "greeting")
        turn_one = "t" + await harness.emit("c1", TranscriptFinal(text="first"))
        await harness.wait_closed("c1", turn_one)
        await harness.committed("c1", turn_one)  # committed after its last piece is sent
        await harness.stop(first)
        # The worst moment to die: the turn is committed, the cursor not yet saved.
        await harness.bus.redis.delete(harness.bus.keys.cursor("llm", "c1"))
        await harness.start("llm-b", **llm)
        turn_two = "t" + await harness.emit("c1", TranscriptFinal(text="second"))
        assert await harness.wait_closed("c1", turn_two) == [(0, "Answer two.", False), (1, "", True)]
        assert len(srv.message_requests) == 2
        assert srv.message_requests[1].body["messages"] == [
            message("user", CALL_ANSWERED_NOTE),
            message("assistant", "Hello."),
            message("user", "first"),
            message("assistant", "Answer one."),
            message("user", "second"),
        ]
        pieces = [(p.turn_id, p.seq) for p in await harness.say("c1")]
        assert pieces == [("greeting", 0), (turn_one, 0), (turn_one, 1), (turn_two, 0), (turn_two, 1)]
        assert await harness.bus.redis.get(harness.bus.keys.lease("llm", "c1")) == b"llm-b"
        await harness.emit("c1", CallEnded(reason="bye"))
        await wait_for(lambda: harness.session_done("c1"), "the session to end")
        assert await harness.bus.redis.ttl(harness.bus.keys.history("c1")) > 0
        assert not await harness.bus.redis.exists(harness.bus.keys.call_stream("c1", "llm:state"))


async def test_a_turn_cut_short_by_a_dead_worker_is_not_said_twice(harness: Harness) -> None:
    first_try = text("Part one. Part two.")
    second_try = text("Other words. Part two, again.")
    async with GatedServer([first_try, second_try], hold_after=3) as srv:
        llm = {"api_key": "k", "base_url": srv.base_url}
        first = await harness.start("llm-a", **llm)
        await harness.call("c1", harness.playbook("brief.md", PLAYBOOK))
        turn = "t" + await harness.emit("c1", TranscriptFinal(text="go"))
        assert await harness.wait_said("c1", turn) == [(0, "Part one.", False)]
        await harness.stop(first)
        srv.release()
        await harness.start("llm-b", **llm)
        # The piece already sent stands; the new answer goes on from the next piece.
        assert await harness.wait_closed("c1", turn) == [
            (0, "Part one.", False),
            (1, "Part two, again.", False),
            (2, "", True),
        ]
        history = await harness.committed("c1", turn)
        assert history[-1]["content"] == [{"type": "text", "text": "Part one. Part two, again."}]
        assert len(srv.message_requests) == 2
