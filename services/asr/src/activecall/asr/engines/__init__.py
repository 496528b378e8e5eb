"""Speech recognition engines behind one small interface, chosen by name from a registry.

An engine opens one :class:`AsrStream` per call at the call's sample rate; the stream takes PCM16
and gives partial results as it goes and a final result when asked (the service decides when an
utterance ends). Engines are synchronous: the service runs them in a thread pool, one stream per
thread at a time. Models are loaded once per process and shared by the streams.

Built in: ``pocketsphinx`` (its US English model ships in the wheel) and ``vosk`` (a model folder).
``auto`` picks Vosk when a Vosk model path is configured or an English Vosk model is installed where
Vosk looks for models, else PocketSphinx. Other engines plug in with :func:`register_asr_engine`.
"""

from __future__ import annotations

from activecall.asr.engines.base import (
    AsrEngine,
    AsrEngineError,
    AsrResult,
    AsrStream,
    AsrStreamClosedError,
    create_asr_engine,
    find_vosk_model,
    register_asr_engine,
    resolve_asr_engine,
)

# The engine modules import their heavy libraries lazily, so registering them costs nothing.
from activecall.asr.engines.pocketsphinx import PocketSphinxEngine
from activecall.asr.engines.vosk import VoskEngine

__all__ = [
    "AsrEngine",
    "AsrEngineError",
    "AsrResult",
    "AsrStream",
    "AsrStreamClosedError",
    "create_asr_engine",
    "find_vosk_model",
    "register_asr_engine",
    "resolve_asr_engine",
]

register_asr_engine("pocketsphinx", PocketSphinxEngine.from_settings)
register_asr_engine("vosk", VoskEngine.from_settings)
