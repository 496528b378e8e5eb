"""The synthesis engines: Piper with the joe voice, the registry, and Coqui's install hint."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from activecall.config import TtsSettings
from activecall.tts.engines import (
    TtsEngine,
    TtsEngineError,
    UnknownVoiceError,
    create_tts_engine,
    register_tts_engine,
    resolve_tts_engine,
    tts_engine_names,
)
from activecall.tts.engines.coqui import INSTALL_HINT, split_sentences
from activecall.tts.engines.piper import PiperEngine, default_voice_paths

THREE_SENTENCES = "Hello there. Your table for four is booked for Friday at eight! Anything else?"


@pytest.fixture(scope="module")
def piper() -> TtsEngine:
    engine = create_tts_engine("piper")
    engine.warm_up()
    return engine


def samples(chunk: bytes) -> np.ndarray[Any, Any]:
    assert chunk and len(chunk) % 2 == 0
    return np.frombuffer(chunk, dtype="<i2")


def test_piper_speaks_sentence_by_sentence_at_its_native_rate(piper: TtsEngine) -> None:
    assert isinstance(piper, PiperEngine)
    assert piper.sample_rate == 22050
    chunks = list(piper.synthesize(THREE_SENTENCES))
    assert len(chunks) == 3
    seconds = [len(samples(c)) / piper.sample_rate for c in chunks]
    assert 0.4 < seconds[0] < 2.0 < seconds[1] < 5.0
    assert 0.4 < seconds[2] < 2.0
    for chunk in chunks:
        # Each sentence is normalised to 0.9 of full scale: headroom for resampling and G.711.
        assert np.abs(samples(chunk).astype(np.int32)).max() == pytest.approx(0.9 * 32768, abs=2)


def test_piper_says_nothing_for_no_text(piper: TtsEngine) -> None:
    assert list(piper.synthesize("")) == []
    assert list(piper.synthesize("   ")) == []


def test_piper_voice_is_loaded_once_per_process(piper: TtsEngine) -> None:
    assert isinstance(piper, PiperEngine)
    other = create_tts_engine("auto", TtsSettings())
    assert isinstance(other, PiperEngine)
    assert other.voice is piper.voice
    model, config = default_voice_paths()
    assert (model.suffix, config.name) == (".onnx", f"{model.name}.json")
    named = create_tts_engine("piper", TtsSettings(voice=str(model)))
    assert isinstance(named, PiperEngine) and named.voice is piper.voice


def test_piper_voices_are_speakers_of_the_model(piper: TtsEngine) -> None:
    assert isinstance(piper, PiperEngine)
    assert list(piper.synthesize("Yes.", voice="en_US-joe-medium"))
    with pytest.raises(
        UnknownVoiceError, match="Piper voice 'en_US-joe-medium' has no speaker 'amy'; known: en_US"
    ):
        list(piper.synthesize("Yes.", voice="amy"))


def test_piper_speaks_for_several_threads_at_once(piper: TtsEngine) -> None:
    texts = [f"Your order number is {n}." for n in range(6)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        spoken = list(pool.map(lambda text: b"".join(piper.synthesize(text)), texts))
    assert all(len(samples(pcm)) > piper.sample_rate for pcm in spoken)


def test_missing_piper_voice_file_is_named() -> None:
    engine = create_tts_engine("piper", TtsSettings(voice="/nowhere/voice.onnx"))
    with pytest.raises(TtsEngineError, match="Piper voice file not found: /nowhere/voice.onnx"):
        engine.warm_up()


# --- Coqui and the registry -----------------------------------------------------------------------


def test_coqui_without_its_package_says_how_to_install_it() -> None:
    assert importlib.util.find_spec("TTS") is None  # Coqui is an optional, heavy engine
    with pytest.raises(TtsEngineError, match="pip install coqui-tts") as caught:
        create_tts_engine("coqui", TtsSettings(coqui_model="tts_models/en/ljspeech/vits"))
    assert str(caught.value) == INSTALL_HINT
    with pytest.raises(TtsEngineError, match="pip install coqui-tts"):
        create_tts_engine("auto", TtsSettings(coqui_model="tts_models/en/ljspeech/vits"))


def test_auto_is_coqui_only_with_a_coqui_model() -> None:
    assert resolve_tts_engine("auto", TtsSettings()) == "piper"
    assert resolve_tts_engine("auto", TtsSettings(coqui_model="/models/coqui")) == "coqui"
    assert resolve_tts_engine("piper", TtsSettings(coqui_model="/models/coqui")) == "piper"


def test_coqui_text_is_spoken_sentence_by_sentence() -> None:
    assert split_sentences(THREE_SENTENCES) == [
        "Hello there.",
        "Your table for four is booked for Friday at eight!",
        "Anything else?",
    ]
    assert split_sentences("  No full stop  ") == ["No full stop"]
    assert split_sentences("") == []


def test_unknown_engine_names_the_known_ones() -> None:
    assert {"coqui", "piper"} <= set(tts_engine_names())
    with pytest.raises(TtsEngineError, match=r"unknown tts engine 'espeak'; known: auto, coqui, .*piper"):
        create_tts_engine("espeak")


def test_registered_engine_is_created_with_the_settings() -> None:
    class Beep(TtsEngine):
        name = "beep"

        @property
        def sample_rate(self) -> int:
            return 8000

        def warm_up(self) -> None:
            pass

        def synthesize(self, text: str, voice: str | None = None) -> Iterator[bytes]:
            yield bytes(160)

    made: list[TtsSettings] = []

    def factory(settings: TtsSettings) -> TtsEngine:
        made.append(settings)
        return Beep()

    register_tts_engine("beep-test", factory)
    settings = TtsSettings(voice="x")
    engine = create_tts_engine("beep-test", settings)
    assert list(engine.synthesize("hi")) == [bytes(160)]
    assert made == [settings]
    with pytest.raises(ValueError, match="invalid tts engine name 'auto'"):
        register_tts_engine("auto", factory)
