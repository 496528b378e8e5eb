"""Coqui TTS, an optional engine for those who have its models. It is heavy (PyTorch), so it is not
part of the default install: ``pip install coqui-tts``, then ``[tts] engine = "coqui"`` and
``coqui_model``: a model name from Coqui's catalogue (Coqui downloads it on first use) or a local
model file or folder with its ``config.json``.

Coqui synthesizes a whole text at once, so the engine splits the text into sentences and yields
each as it is made. One model per process; its inference is serialized, since Coqui's synthesizer
keeps state between calls.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from activecall.audio import float_to_pcm16
from activecall.config import TtsSettings
from activecall.tts.engines.base import TtsEngine, TtsEngineError

INSTALL_HINT = "Coqui TTS is not installed; install it with: pip install coqui-tts"
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()
_INFERENCE_LOCK = threading.Lock()


def _coqui_class() -> Any:
    try:
        from TTS.api import TTS
    except ImportError as exc:
        raise TtsEngineError(INSTALL_HINT) from exc
    return TTS


def load_model(model: str) -> Any:
    """The process's Coqui model of this name or path."""
    tts_class = _coqui_class()
    with _LOCK:
        if model not in _MODELS:
            path = Path(model).expanduser()
            if path.exists():
                config = (path if path.is_dir() else path.parent) / "config.json"
                _MODELS[model] = tts_class(model_path=str(path), config_path=str(config))
            else:
                _MODELS[model] = tts_class(model_name=model)
        return _MODELS[model]


def split_sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


class CoquiEngine(TtsEngine):
    name = "coqui"

    def __init__(self, model: str) -> None:
        _coqui_class()  # fail now, with the install command, rather than on the first call
        if not model:
            raise TtsEngineError(
                "[tts] coqui_model is required for the coqui engine (a model name or a path)"
            )
        self.model = model

    @classmethod
    def from_settings(cls, settings: TtsSettings) -> CoquiEngine:
        return cls(settings.coqui_model)

    @property
    def sample_rate(self) -> int:
        rate: int = load_model(self.model).synthesizer.output_sample_rate
        return rate

    def warm_up(self) -> None:
        for _ in self.synthesize("Hello."):
            pass

    def synthesize(self, text: str, voice: str | None = None) -> Iterator[bytes]:
        tts = load_model(self.model)
        for sentence in split_sentences(text):
            with _INFERENCE_LOCK:
                samples = tts.tts(text=sentence, speaker=voice) if voice else tts.tts(text=sentence)
            yield float_to_pcm16(samples)
