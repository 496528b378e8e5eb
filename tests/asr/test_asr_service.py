"""The asr service over the bus: Piper speech through G.711 in, transcripts out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from asr_helpers import (
    SILENCE,
    asr_config,
    end_call,
    finals,
    start_call,
    stream_audio,
    write_hint_playbook,
)
from speech_data import HINTS, IN_DOMAIN, ORDINARY

from activecall.asr import metrics
from activecall.asr.service import PREROLL_MS, AsrService
from activecall.audio import word_accuracy
from activecall.config import RedisSettings
from activecall.messages import TranscriptPartial
from activecall.service import Runtime


async def transcribe(
    settings: RedisSettings,
    call_id: str,
    sentences: list[str],
    speak: Callable[[str], bytes],
    tmp: Path,
    hints: list[str] | None,
) -> list[str]:
    playbook = write_hint_playbook(tmp / "playbooks", hints) if hints else ""
    config = asr_config(settings, tmp / "playbooks")
    runtime = Runtime("asr", config, "asr-test", 0, 5.0)
    service = AsrService(runtime)
    await service.start()
    bus = runtime.bus
    try:
        await start_call(bus, call_id, playbook)
        seq = 0
        for sentence in sentences:
            seq = await stream_audio(bus, call_id, speak(sentence) + SILENCE, seq0=seq)
        got = await finals(bus, call_id, len(sentences), timeout_s=240)
        await end_call(bus, call_id)
        partials = await bus.read({bus.keys.events(call_id): "0"}, count=10_000)
        assert any(isinstance(e.message, TranscriptPartial) for e in partials)
        assert [f.utterance for f in got] == list(range(1, len(got) + 1))
        return [f.text for f in got]
    finally:
        await service.stop()
        await bus.close()


def accuracy(references: list[str], hypotheses: list[str]) -> float:
    assert len(hypotheses) == len(references), hypotheses
    return sum(word_accuracy(r, h) for r, h in zip(references, hypotheses, strict=True)) / len(references)


async def test_default_engine_accuracy_and_phrase_hints(
    redis_settings: RedisSettings, phone_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    speak, tmp = phone_speech, tmp_path
    ordinary = accuracy(ORDINARY, await transcribe(redis_settings, "ordinary", ORDINARY, speak, tmp, None))
    plain = accuracy(IN_DOMAIN, await transcribe(redis_settings, "plain", IN_DOMAIN, speak, tmp, None))
    hinted = accuracy(IN_DOMAIN, await transcribe(redis_settings, "hinted", IN_DOMAIN, speak, tmp, HINTS))
    print(
        f"\nasr word accuracy over the bus (Piper -> G.711 8 kHz -> PocketSphinx): ordinary {ordinary:.1%}, "
        f"in-domain {plain:.1%} without hints, {hinted:.1%} with the playbook's phrase hints"
    )
    assert ordinary >= 0.70
    assert hinted >= 0.90
    assert hinted > plain


async def test_the_recognizer_hears_the_callers_turns_and_not_the_silence_between(
    redis_settings: RedisSettings, phone_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    """10 s of a listening caller, a sentence, 3 s more: the engine is fed the sentence with its
    pre-roll and the silence that ended the turn, and the words are placed on the media clock."""
    sentence = ORDINARY[0]
    speech = phone_speech(sentence)
    runtime = Runtime("asr", asr_config(redis_settings), "asr-gate", 0, 5.0)
    service = AsrService(runtime)
    await service.start()
    bus = runtime.bus
    fed_before = metrics.AUDIO_SECONDS._value.get()
    try:
        await start_call(bus, "gated")
        await stream_audio(bus, "gated", SILENCE * 10 + speech + SILENCE * 3)
        (final,) = await finals(bus, "gated", 1, timeout_s=120)
        await end_call(bus, "gated")
    finally:
        await service.stop()
        await bus.close()
    fed_s = metrics.AUDIO_SECONDS._value.get() - fed_before
    speech_s = len(speech) / 2 / 8000
    assert word_accuracy(sentence, final.text) >= 0.5, final.text  # accuracy itself: the test above
    # The sentence, 300 ms before it and at most the longest wait for the end of the turn after it.
    assert speech_s <= fed_s <= speech_s + PREROLL_MS / 1000 + 0.9, (fed_s, speech_s)
    assert 10_000 - PREROLL_MS <= final.start_ms < final.end_ms <= 10_000 + speech_s * 1000 + 100, final
    assert final.end_ms <= final.speech_end_ms + 100
