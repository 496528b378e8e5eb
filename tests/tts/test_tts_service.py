"""The tts service over the bus: say in, 8 kHz audio out, cancellation, the phrase cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from activecall.asr.engines import create_asr_engine
from activecall.audio import ncc_peak, resample, trim_leading_silence, word_accuracy
from activecall.bus import Bus
from activecall.config import RedisSettings, load_config
from activecall.messages import AudioChunk, CallEnded, SaySynthesized, SayText, SessionStart, TurnCancelled
from activecall.service import Runtime
from activecall.tts.engines.piper import PiperEngine
from activecall.tts.service import TtsService

TEXT = "Thank you for calling the dental office. How can I help you today?"


@pytest.fixture
async def tts(redis_settings: RedisSettings) -> AsyncIterator[TtsService]:
    config = load_config(None, env={})
    config.redis = redis_settings
    service = TtsService(Runtime("tts", config, "tts-test", 0, 5.0))
    # Piper draws random noise for timing and intonation; without it the same text always gives the
    # same audio, so what reaches audio:out can be compared with the engine's own output.
    service.engine = PiperEngine(noise_scale=0.0, noise_w_scale=0.0)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        await service.runtime.bus.close()


async def chunks_of(
    bus: Bus, call_id: str, turn_id: str, until_last: bool, timeout_s: float
) -> list[AudioChunk]:
    deadline = time.monotonic() + timeout_s
    while True:
        entries = await bus.read({bus.keys.audio_out(call_id): "0"}, count=100_000)
        chunks = [
            e.message for e in entries if isinstance(e.message, AudioChunk) and e.message.turn_id == turn_id
        ]
        if (chunks and (chunks[-1].last or not until_last)) or time.monotonic() > deadline:
            return chunks
        await asyncio.sleep(0.05)


async def begin(bus: Bus, call_id: str) -> None:
    await bus.publish(
        bus.keys.sessions("tts"), SessionStart(call_id=call_id, role="tts", sample_rate=8000), maxlen=0
    )


async def test_say_becomes_8khz_audio_that_matches_the_engine_and_reads_back(tts: TtsService) -> None:
    bus = tts.runtime.bus
    await begin(bus, "say-1")
    await bus.publish(
        bus.keys.say("say-1"), SayText(call_id="say-1", turn_id="t1", seq=0, text=TEXT, last=True)
    )
    chunks = await chunks_of(bus, "say-1", "t1", until_last=True, timeout_s=60)
    assert chunks and chunks[-1].last and all(c.sample_rate == 8000 for c in chunks)
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    heard = b"".join(c.pcm for c in chunks)

    native = b"".join(tts.engine.synthesize(TEXT))
    expected = resample(native, tts.engine.sample_rate, 8000)
    peak, lag = ncc_peak(heard, expected)
    lead_in = (len(expected) - len(trim_leading_silence(expected, 8000))) // 2  # trimmed by the tts
    recognizer = create_asr_engine("pocketsphinx")
    stream = recognizer.open(tts.engine.sample_rate)
    stream.feed(native)
    result = stream.finish()
    accuracy = word_accuracy(TEXT, result.text if result else "")
    print(
        f"\ntts: audio:out vs engine output at 8 kHz ncc {peak:.3f} (lag {lag}); "
        f"native-rate read-back {accuracy:.0%}"
    )
    assert peak >= 0.95 and abs(lag + lead_in) < 80
    assert accuracy >= 0.85

    events = await bus.read({bus.keys.events("say-1"): "0"})
    (synthesized,) = [e.message for e in events if isinstance(e.message, SaySynthesized)]
    assert synthesized.duration_ms == len(heard) * 1000 // 16000 and synthesized.chars == len(TEXT)
    await bus.emit("say-1", CallEnded(reason="test"))


async def test_a_cancelled_turn_stops_and_its_queued_text_is_dropped(tts: TtsService) -> None:
    bus = tts.runtime.bus
    await begin(bus, "cut")
    sentences = [f"This is sentence number {n} of a long answer that goes on and on." for n in range(40)]
    await bus.publish_many(
        (
            bus.keys.say("cut"),
            SayText(call_id="cut", turn_id="long", seq=i, text=s, last=i == len(sentences) - 1),
        )
        for i, s in enumerate(sentences)
    )
    first = await chunks_of(bus, "cut", "long", until_last=False, timeout_s=60)
    assert first
    cancel_id = await bus.emit("cut", TurnCancelled(turn_id="long", reason="barge_in"))
    await bus.publish(
        bus.keys.say("cut"), SayText(call_id="cut", turn_id="next", seq=0, text="Okay.", last=True)
    )
    await chunks_of(bus, "cut", "next", until_last=True, timeout_s=30)
    await asyncio.sleep(1.0)
    entries = await bus.read({bus.keys.audio_out("cut"): "0"}, count=100_000)
    cancel_ms = int(cancel_id.split("-")[0])
    long_chunks = [e for e in entries if isinstance(e.message, AudioChunk) and e.message.turn_id == "long"]
    late = [e for e in long_chunks if int(e.id.split("-")[0]) > cancel_ms + 200]
    assert late == []
    assert not any(c.message.last for c in long_chunks)  # type: ignore[attr-defined]
    await bus.emit("cut", CallEnded(reason="test"))


async def test_the_phrase_cache_makes_a_repeated_greeting_free(tts: TtsService) -> None:
    first = time.perf_counter()
    a = await tts.speech("Hello and welcome.", 8000)
    miss = time.perf_counter() - first
    second = time.perf_counter()
    b = await tts.speech("Hello and welcome.", 8000)
    hit = time.perf_counter() - second
    assert a == b and a
    assert tts.cache.get(("piper", "", "Hello and welcome.", 8000)) == a
    print(f"\ntts phrase cache: miss {miss * 1000:.1f} ms, hit {hit * 1000:.3f} ms")


async def test_a_turns_audio_keeps_its_interruptibility_and_its_start_time(tts: TtsService) -> None:
    bus = tts.runtime.bus
    await begin(bus, "say-marks")
    piece = SayText(
        call_id="say-marks",
        turn_id="t1",
        seq=0,
        text=TEXT,
        last=True,
        interruptible=False,
        not_before_ms=4321,
    )
    await bus.publish(bus.keys.say("say-marks"), piece)
    chunks = await chunks_of(bus, "say-marks", "t1", until_last=True, timeout_s=60)
    assert len(chunks) > 1 and chunks[-1].last
    assert {c.interruptible for c in chunks} == {False}
    assert [c.not_before_ms for c in chunks] == [4321] + [0] * (len(chunks) - 1)
    await bus.emit("say-marks", CallEnded(reason="test"))
