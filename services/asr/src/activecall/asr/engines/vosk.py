"""Vosk (Kaldi): one Model per model folder and process, one KaldiRecognizer per stream.

The model comes from ``[asr] vosk_model_path``, or is an English model installed where Vosk keeps
its downloads (``make models`` or the asr image put one there). Vosk resamples the call's audio
itself. Phrase hints become the recognizer's grammar (Vosk builds a language model of the phrases)
when the model has a dynamic graph (``HCLr.fst`` + ``Gr.fst``); static-graph models ignore them.
Phrases with words the model lacks are dropped, and ``[unk]`` is added when the model has it, so
speech outside the hints comes out as unknown words rather than as the nearest hint.

Vosk ends utterances itself on silence; the words of those pieces are held and given with the
final result of :meth:`VoskStream.finish`, so the service alone decides where an utterance ends.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from activecall.asr.engines.base import (
    AsrEngine,
    AsrEngineError,
    AsrResult,
    AsrStream,
    AsrStreamClosedError,
    find_vosk_model,
)
from activecall.audio import split_words
from activecall.config import AsrSettings

log = logging.getLogger("activecall.asr.vosk")

PARTIAL_INTERVAL_MS = 200
UNKNOWN = "[unk]"

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _vosk() -> Any:
    try:
        import vosk
    except ImportError as exc:
        raise AsrEngineError("Vosk is not installed: pip install vosk") from exc
    vosk.SetLogLevel(-1)
    return vosk


def load_model(path: Path) -> Any:
    """The process's one Model of this folder (Vosk models are safe to share between threads)."""
    key = str(path.resolve())
    with _LOCK:
        if key not in _MODELS:
            if not path.is_dir():
                raise AsrEngineError(f"Vosk model folder not found: {path}")
            try:
                _MODELS[key] = _vosk().Model(key)
            except Exception as exc:  # vosk raises a bare Exception when the folder is no model
                raise AsrEngineError(f"Vosk cannot load the model in {path}: {exc}") from exc
        return _MODELS[key]


def supports_grammar(path: Path) -> bool:
    """Whether the model has a dynamic graph, which Vosk can recompose with a grammar."""
    return any(
        (folder / "HCLr.fst").exists() and (folder / "Gr.fst").exists() for folder in (path / "graph", path)
    )


def hint_grammar(model: Any, hints: list[str]) -> str | None:
    """The grammar of the hints the model can say (JSON list), or None if none can be said."""
    phrases = [" ".join(words) for words in map(split_words, hints) if words]
    usable = [p for p in phrases if all(model.vosk_model_find_word(w) >= 0 for w in p.split())]
    dropped = sorted(set(phrases) - set(usable))
    if dropped:
        log.info("hint phrases with words the Vosk model lacks are ignored", extra={"phrases": dropped})
    if not usable:
        return None
    if model.vosk_model_find_word(UNKNOWN) >= 0:
        usable.append(UNKNOWN)
    return json.dumps(usable, ensure_ascii=False)


class VoskStream(AsrStream):
    def __init__(self, recognizer: Any, sample_rate: int) -> None:
        self.recognizer = recognizer
        self.sample_rate = sample_rate
        self.closed = False
        self.fed_samples = 0
        self.held: list[dict[str, Any]] = []  # words of pieces Vosk ended itself since finish()
        self.utterance_start_ms = 0
        self.in_utterance = False
        self.next_partial_ms = 0
        self.last_partial = ""

    @property
    def fed_ms(self) -> int:
        return self.fed_samples * 1000 // self.sample_rate

    def feed(self, pcm16: bytes) -> list[AsrResult]:
        if self.closed:
            raise AsrStreamClosedError("feed() on a closed stream")
        if len(pcm16) % 2:
            raise ValueError(f"PCM16 data has an odd length ({len(pcm16)} bytes)")
        if not self.in_utterance:
            self.in_utterance = True
            self.utterance_start_ms = self.fed_ms
            self.next_partial_ms = self.fed_ms + PARTIAL_INTERVAL_MS
        self.fed_samples += len(pcm16) // 2
        if self.recognizer.AcceptWaveform(pcm16):
            self.held += _words(self.recognizer.Result())
        elif self.fed_ms < self.next_partial_ms:
            return []
        self.next_partial_ms = self.fed_ms + PARTIAL_INTERVAL_MS
        partial = json.loads(self.recognizer.PartialResult()).get("partial", "")
        text = _text([*(w["word"] for w in self.held), *partial.split()])
        if not text or text == self.last_partial:
            return []
        self.last_partial = text
        start = int(self.held[0]["start"] * 1000) if self.held else self.utterance_start_ms
        return [AsrResult(text, False, start, self.fed_ms)]

    def finish(self) -> AsrResult | None:
        if self.closed:
            raise AsrStreamClosedError("finish() on a closed stream")
        words = [*self.held, *_words(self.recognizer.FinalResult())]
        self.held = []
        self.in_utterance = False
        self.last_partial = ""
        words = [w for w in words if w["word"] != UNKNOWN]
        if not words:
            return None
        confidence = sum(float(w.get("conf", 0.0)) for w in words) / len(words)
        start, end = int(words[0]["start"] * 1000), int(words[-1]["end"] * 1000)
        return AsrResult(_text(w["word"] for w in words), True, start, end, confidence)

    def close(self) -> None:
        self.closed = True
        self.recognizer = None


def _words(result_json: str) -> list[dict[str, Any]]:
    words: list[dict[str, Any]] = json.loads(result_json).get("result", [])
    return words


def _text(words: Any) -> str:
    return " ".join(w for w in words if w != UNKNOWN)


class VoskEngine(AsrEngine):
    name = "vosk"

    def __init__(self, model_path: str | Path) -> None:
        self.model_path = Path(model_path)

    @classmethod
    def from_settings(cls, settings: AsrSettings) -> VoskEngine:
        path = Path(settings.vosk_model_path) if settings.vosk_model_path else find_vosk_model("en-us")
        if path is None:
            raise AsrEngineError("no Vosk model: set [asr] vosk_model_path or install one (make models)")
        return cls(path)

    def warm_up(self) -> None:
        load_model(self.model_path)

    def open(self, sample_rate: int, hints: list[str] | None = None) -> VoskStream:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        vosk = _vosk()
        model = load_model(self.model_path)
        grammar = hint_grammar(model, hints) if hints and supports_grammar(self.model_path) else None
        if grammar is not None:
            recognizer = vosk.KaldiRecognizer(model, float(sample_rate), grammar)
        else:
            recognizer = vosk.KaldiRecognizer(model, float(sample_rate))
        recognizer.SetWords(True)
        return VoskStream(recognizer, sample_rate)
