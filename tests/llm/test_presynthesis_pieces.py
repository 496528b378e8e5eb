"""The tts pre-synthesises a playbook's fixed phrases as the say pieces the llm will send for them
(its phrase cache is keyed by piece): here the llm says each fixed text of a playbook on a call, and
every turn's pieces must equal the tts's list for that text."""

from __future__ import annotations

from llm_harness import Harness

from activecall.messages import DtmfReceived, PlaybackFinished, PlaybackStarted, TranscriptFinal
from activecall.playbook import load_playbook
from activecall.testing.anthropic_server import FakeAnthropicServer, server_error
from activecall.tts.presynthesis import APOLOGY_PIECES, playbook_phrases

# Abbreviations, decimals, ellipses and line breaks: where a naive split would differ.
PLAYBOOK = """\
---
greeting: "Welcome to {{ company }}, Inc. We open at 9 a.m. daily... Dr. Lee is in! Ask away."
llm:
  provider: scripted
variables:
  company: Acme
rules:
  - keywords: [hours]
    say: "Hours are 9 a.m. to 5.30 p.m. Mon. to Fri. See e.g. our site acme.com. Thanks!"
  - keywords: [bye]
    say: "Goodbye from {{ company }}.\\nTake care!"
    action: hangup
fallback: "Sorry... I did not get that. Try again?"
follow_up:
  timeout_s: 0.2
  max_count: 1
  text: "Hello?? Are you there... still?"
  final_text: "No answer. I will hang up now, J. Doe says bye."
dtmf:
  "*": {action: say, text: "Press 1 for St. Mary's. Press 2 for No. 5."}
---
Be brief.

# Scene: main
Help.

```yaml
rules:
  - keywords: [price]
    say: "It costs $3.50 (approx.) per min. That's all."
```
"""


async def heard(harness: Harness, call_id: str, turn_id: str) -> None:
    """What the media worker reports as a turn plays out (a reply not yet heard is merged with what
    the caller says next)."""
    await harness.emit(call_id, PlaybackStarted(turn_id=turn_id))
    await harness.emit(call_id, PlaybackFinished(turn_id=turn_id, played_ms=1000))


def texts(pieces: list[tuple[int, str, bool]]) -> list[str]:
    return [text for _, text, _ in pieces if text]


async def test_the_llm_sends_each_fixed_text_as_the_pieces_the_tts_presynthesises(harness: Harness) -> None:
    name = harness.playbook("fixed.md", PLAYBOOK)
    phrases = playbook_phrases(load_playbook(harness.playbook_dir / name))
    assert phrases.skipped == {}
    scene_rule = next(w for w in phrases.texts if w.startswith("scene main rule"))
    hours_rule, bye_rule = [w for w in phrases.texts if w.startswith("rule")]
    await harness.start()
    await harness.call("c1", name)
    sent = {"greeting": texts(await harness.wait_closed("c1", "greeting"))}
    turn = ""
    for what, event in [
        (scene_rule, TranscriptFinal(text="what is the price")),
        (hours_rule, TranscriptFinal(text="your hours please")),
        ("fallback", TranscriptFinal(text="something else entirely")),
        ("dtmf *", DtmfReceived(digit="*")),
    ]:
        turn = "t" + await harness.emit("c1", event)
        sent[what] = texts(await harness.wait_closed("c1", turn))
        await heard(harness, "c1", turn)
    # Silence after the last answer was heard: the follow-up, then the last line.
    sent["follow_up.text"] = texts(await harness.wait_closed("c1", "f1"))
    await heard(harness, "c1", "f1")
    sent["follow_up.final_text"] = texts(await harness.wait_closed("c1", "final"))

    await harness.call("c2", name)
    await harness.wait_closed("c2", "greeting")
    await heard(harness, "c2", "greeting")
    bye = "t" + await harness.emit("c2", TranscriptFinal(text="bye then"))
    sent[bye_rule] = texts(await harness.wait_closed("c2", bye))

    assert all(len(pieces) > 1 for pieces in sent.values())
    assert sent == phrases.texts


async def test_the_llm_sends_its_apology_as_the_tts_presynthesises_it(harness: Harness) -> None:
    async with FakeAnthropicServer([server_error(0.01)]) as srv:
        await harness.start(api_key="test-key", base_url=srv.base_url, timeout=2.0, max_retries=0)
        await harness.call(
            "c1", harness.playbook("plain.md", "---\nllm: {provider: anthropic}\n---\nHelp.\n")
        )
        turn = "t" + await harness.emit("c1", TranscriptFinal(text="Are you there?"))
        assert texts(await harness.wait_closed("c1", turn)) == list(APOLOGY_PIECES)
