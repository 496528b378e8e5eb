"""Pre-synthesis: the playbooks' fixed phrases are pinned in the phrase cache before the first call.

Real Piper; no timing assertions. A recording engine tells which texts reached the synthesizer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from activecall.bus import Bus
from activecall.config import Config, PlaybookSettings, RedisSettings, TtsSettings
from activecall.messages import AudioChunk, CallEnded, SayText, SessionStart
from activecall.playbook import load_playbook
from activecall.sentences import APOLOGY, split_text
from activecall.service import Runtime
from activecall.tts.engines import TtsEngine
from activecall.tts.engines.piper import PiperEngine
from activecall.tts.presynthesis import APOLOGY_PIECES, PRESYNTHESIS_RATE, playbook_phrases
from activecall.tts.service import TtsService

GREETING = "Hello, thanks for calling {{ company }}. Dr. Smith is in today!"
GREETING_PIECES = ["Hello, thanks for calling Acme.", "Dr. Smith is in today!"]
FRONT = """\
---
greeting: "{greeting}"
variables:
  company: Acme
rules:
  - keywords: [hours]
    say: We are open 9 a.m. to 5 p.m. See you soon.
  - keywords: [bye]
    say: Goodbye from {{{{ company }}}}.
    action: hangup
fallback: Sorry, I did not get that.
follow_up:
  text: Still there?
  final_text: Hanging up now. Bye!
dtmf:
  "*": {{action: say, text: "Press 1 for sales."}}
---
Be brief.

# Scene: main
Help.

```yaml
rules:
  - keywords: [price]
    say: It costs ten dollars.
```
"""
OTHER_PIECES = [  # in the order they are pinned: scene rules, playbook rules, fallback, follow-up, dtmf
    "It costs ten dollars.",
    "We are open 9 a.m. to 5 p.m.",
    "See you soon.",
    "Goodbye from Acme.",
    "Sorry, I did not get that.",
    "Still there?",
    "Hanging up now.",
    "Bye!",
    "Press 1 for sales.",
]


def playbook_text(greeting: str = GREETING) -> str:
    return FRONT.format(greeting=greeting)


class RecordingEngine(TtsEngine):
    """Piper, remembering every text it was asked to speak."""

    name = "piper"

    def __init__(self, inner: TtsEngine) -> None:
        self.inner = inner
        self.texts: list[str] = []

    @property
    def sample_rate(self) -> int:
        return self.inner.sample_rate

    def warm_up(self) -> None:
        self.inner.warm_up()

    def synthesize(self, text: str, voice: str | None = None) -> Iterator[bytes]:
        self.texts.append(text)
        yield from self.inner.synthesize(text, voice)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, limit_s: float = 60.0) -> Any:
    deadline = time.monotonic() + limit_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


Factory = Callable[..., Awaitable[TtsService]]


@pytest.fixture
async def make_tts(redis_settings: RedisSettings, tmp_path: Path) -> AsyncIterator[Factory]:
    services: list[TtsService] = []

    async def make(start: bool = True, poll_s: float = 0.1, **tts: Any) -> TtsService:
        config = Config(
            redis=redis_settings,
            tts=TtsSettings(**tts),
            playbooks=PlaybookSettings(dirs=[str(tmp_path)]),
        )
        service = TtsService(Runtime("tts", config, f"tts-{len(services)}", 0, 5.0))
        service.engine = RecordingEngine(PiperEngine())
        assert service.presynthesizer is not None or not config.tts.presynthesize
        if service.presynthesizer is not None:
            service.presynthesizer.poll_s = poll_s
        services.append(service)
        if start:
            await service.start()
        return service

    try:
        yield make
    finally:
        for service in services:
            await service.stop()
            await service.runtime.bus.close()


def pinned_texts(tts: TtsService) -> set[str]:
    return {key[2] for key in tts.cache.pinned_keys()}


def key(tts: TtsService, text: str) -> tuple[str, str, str, int]:
    return tts.cache_key(text, PRESYNTHESIS_RATE)


def engine_texts(tts: TtsService) -> list[str]:
    assert isinstance(tts.engine, RecordingEngine)
    return tts.engine.texts


def touch(path: Path, text: str) -> None:
    """Write the file and move its mtime on, however coarse the file system's clock."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    if path.stat().st_mtime_ns <= before:
        os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


async def audio_of(bus: Bus, call_id: str, turn_id: str) -> bytes:
    async def check() -> list[AudioChunk]:
        entries = await bus.read({bus.keys.audio_out(call_id): "0"}, count=100_000)
        chunks = [
            e.message for e in entries if isinstance(e.message, AudioChunk) and e.message.turn_id == turn_id
        ]
        return chunks if chunks and chunks[-1].last else []

    chunks: list[AudioChunk] = await wait_for(check, f"the audio of {turn_id}")
    return b"".join(c.pcm for c in chunks)


def test_the_tts_pieces_of_a_playbook_are_its_texts_split_as_the_llm_splits_them(tmp_path: Path) -> None:
    path = tmp_path / "shop.md"
    path.write_text(playbook_text(), encoding="utf-8")
    phrases = playbook_phrases(load_playbook(path))
    assert (
        phrases.texts["greeting"]
        == GREETING_PIECES
        == split_text("Hello, thanks for calling Acme. Dr. Smith is in today!")
    )
    assert phrases.pieces == GREETING_PIECES + OTHER_PIECES
    assert phrases.skipped == {}


async def test_the_first_calls_greeting_is_pinned_before_the_first_session(
    make_tts: Factory, tmp_path: Path
) -> None:
    (tmp_path / "shop.md").write_text(playbook_text(), encoding="utf-8")
    hits = sample("activecall_tts_cache_lookups_total", result="hit")
    made = sample("activecall_tts_presynthesized_phrases_total")
    tts = await make_tts(start=False)
    bus = tts.runtime.bus
    # The call is waiting before the service starts: it is taken as soon as the service takes sessions.
    await bus.publish(
        bus.keys.sessions("tts"), SessionStart(call_id="first", role="tts", sample_rate=8000), maxlen=0
    )
    await bus.publish_many(
        (bus.keys.say("first"), SayText(call_id="first", turn_id="greeting", seq=i, text=t, last=i == 1))
        for i, t in enumerate(GREETING_PIECES)
    )
    await tts.start()
    expected = {APOLOGY, *GREETING_PIECES, *OTHER_PIECES}
    assert pinned_texts(tts) == expected
    assert sample("activecall_tts_presynthesized_phrases_total") == made + len(expected)
    assert sample("activecall_tts_cache_pinned_entries") == len(expected)
    synthesized_at_start = list(engine_texts(tts))
    assert sorted(synthesized_at_start) == sorted(expected)

    heard = await audio_of(bus, "first", "greeting")
    assert engine_texts(tts) == synthesized_at_start  # the greeting was not synthesized again
    assert sample("activecall_tts_cache_lookups_total", result="hit") == hits + 2
    assert heard == b"".join(tts.cache.peek(key(tts, t)) or b"" for t in GREETING_PIECES)
    await bus.emit("first", CallEnded(reason="test"))


async def test_a_greeting_that_needs_call_variables_is_skipped_once(
    make_tts: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "caller.md").write_text(playbook_text("Hello {{ caller }}, welcome."), encoding="utf-8")
    header = 'Your reference is {{ X-Twilio-CallSid | default(\\"none\\") }}.'
    (tmp_path / "twilio.md").write_text(playbook_text(header), encoding="utf-8")
    caplog.set_level(logging.INFO, logger="activecall.tts.presynthesis")
    tts = await make_tts()
    texts = pinned_texts(tts)
    assert not any(t.startswith(("Hello", "Your reference")) for t in texts)
    assert set(OTHER_PIECES) <= texts
    assert not any(t.startswith(("Hello", "Your reference")) for t in engine_texts(tts))
    skipped = [r.getMessage() for r in caplog.records if "reads call variables" in r.getMessage()]
    assert len(skipped) == 2
    assert any("caller.md: greeting reads call variables (caller)" in m for m in skipped)
    assert any("twilio.md: greeting reads call variables (sip)" in m for m in skipped)
    # Polls that find nothing changed neither reload nor log again.
    refreshes = tts.presynthesizer.refreshes if tts.presynthesizer else -1
    await asyncio.sleep(0.5)
    assert tts.presynthesizer is not None and tts.presynthesizer.refreshes == refreshes
    assert len([r for r in caplog.records if "reads call variables" in r.getMessage()]) == 2


async def test_a_changed_playbook_pins_its_new_phrase_and_unpins_the_old(
    make_tts: Factory, tmp_path: Path
) -> None:
    path = tmp_path / "shop.md"
    path.write_text(playbook_text(), encoding="utf-8")
    tts = await make_tts()
    old = key(tts, "Dr. Smith is in today!")
    assert old in tts.cache.pinned_keys()

    touch(path, playbook_text("Hello, thanks for calling {{ company }}. Dr. Jones is in today!"))
    new = key(tts, "Dr. Jones is in today!")

    async def swapped() -> bool:
        pinned = tts.cache.pinned_keys()
        return new in pinned and old not in pinned

    await wait_for(swapped, "the new greeting pinned and the old one unpinned")
    assert "Dr. Jones is in today!" in engine_texts(tts)
    assert engine_texts(tts).count("Hello, thanks for calling Acme.") == 1  # unchanged: kept
    assert tts.cache.peek(old) is not None  # an ordinary LRU entry now

    added = tmp_path / "more.md"
    touch(added, "---\ngreeting: Welcome to the annex.\n---\nBe brief.\n")
    annex = key(tts, "Welcome to the annex.")

    async def annex_pinned() -> bool:
        return annex in tts.cache.pinned_keys()

    await wait_for(annex_pinned, "the phrase of a new file pinned")
    added.unlink()

    async def annex_unpinned() -> bool:
        return annex not in tts.cache.pinned_keys()

    await wait_for(annex_unpinned, "the phrase of a removed file unpinned")
    assert new in tts.cache.pinned_keys()


async def test_a_broken_playbook_is_logged_and_skipped(
    make_tts: Factory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "broken.md").write_text("---\ngreting: Hi there.\nrules: [[[\n---\nBody\n", encoding="utf-8")
    (tmp_path / "bad-template.md").write_text("---\ngreeting: 'Hi {{ name'\n---\nBody\n", encoding="utf-8")
    (tmp_path / "shop.md").write_text(playbook_text(), encoding="utf-8")
    caplog.set_level(logging.INFO, logger="activecall.tts.presynthesis")
    tts = await make_tts()
    assert {*GREETING_PIECES, *OTHER_PIECES} <= pinned_texts(tts)
    broken = [r.getMessage() for r in caplog.records if "does not load" in r.getMessage()]
    assert any("broken.md" in m for m in broken) and any("bad-template.md" in m for m in broken)

    bus = tts.runtime.bus
    await bus.publish(
        bus.keys.sessions("tts"), SessionStart(call_id="after", role="tts", sample_rate=8000), maxlen=0
    )
    await bus.publish(
        bus.keys.say("after"), SayText(call_id="after", turn_id="t1", seq=0, text="All fine.", last=True)
    )
    assert await audio_of(bus, "after", "t1")  # the service took the call
    await bus.emit("after", CallEnded(reason="test"))


async def test_at_most_presynthesize_max_phrases_are_pinned_and_live_traffic_keeps_them(
    make_tts: Factory, tmp_path: Path
) -> None:
    (tmp_path / "shop.md").write_text(playbook_text(), encoding="utf-8")
    tts = await make_tts(presynthesize_max=3, cache_entries=1)
    # The apology first, then the playbook's pieces in order, greeting first.
    assert pinned_texts(tts) == {APOLOGY, *GREETING_PIECES}
    assert sample("activecall_tts_cache_pinned_entries") == 3
    assert len(engine_texts(tts)) == 3
    for text in ("One.", "Two.", "Three."):
        await tts.speech(text, PRESYNTHESIS_RATE)
    assert pinned_texts(tts) == {APOLOGY, *GREETING_PIECES}
    assert all(tts.cache.get(key(tts, t)) for t in [APOLOGY, *GREETING_PIECES])
    assert tts.cache.peek(key(tts, "One.")) is None  # the LRU of one entry did evict
    assert tts.cache.peek(key(tts, "Three.")) is not None


async def test_presynthesis_can_be_turned_off(make_tts: Factory, tmp_path: Path) -> None:
    (tmp_path / "shop.md").write_text(playbook_text(), encoding="utf-8")
    tts = await make_tts(presynthesize=False)
    assert tts.presynthesizer is None
    assert tts.cache.pinned_keys() == frozenset()
    assert engine_texts(tts) == []


async def test_a_second_tts_loads_the_phrases_the_first_made_and_synthesizes_none(
    make_tts: Factory, tmp_path: Path
) -> None:
    """A restarted or added tts worker takes its fixed phrases from Redis (shared_phrases)."""
    (tmp_path / "shop.md").write_text(playbook_text(), encoding="utf-8")
    loaded = sample("activecall_tts_presynthesis_loaded_phrases_total")
    first = await make_tts()
    assert sorted(engine_texts(first)) == sorted([*APOLOGY_PIECES, *GREETING_PIECES, *OTHER_PIECES])
    second = await make_tts()
    assert engine_texts(second) == []
    assert pinned_texts(second) == pinned_texts(first)
    expected = len(pinned_texts(first))
    assert sample("activecall_tts_presynthesis_loaded_phrases_total") - loaded == expected
    for text in GREETING_PIECES:
        assert second.cache.peek(key(second, text)) == first.cache.peek(key(first, text))
