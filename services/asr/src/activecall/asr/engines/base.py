"""The interface of speech recognition engines (:class:`AsrEngine`, :class:`AsrStream`) and the
registry that makes them by name; :mod:`activecall.asr.engines` registers the built-in ones."""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from activecall.config import AsrSettings

AUTO = "auto"
# Where Vosk itself looks for downloaded models (vosk.MODEL_DIRS), without importing it.
VOSK_MODEL_DIRS = ("$VOSK_MODEL_PATH", "/usr/share/vosk", "~/.cache/vosk")


class AsrEngineError(RuntimeError):
    """An engine that cannot be created or used (unknown name, missing package, missing model)."""


class AsrStreamClosedError(AsrEngineError):
    """A stream used after :meth:`AsrStream.close`."""


@dataclass(frozen=True, slots=True)
class AsrResult:
    """A transcript of the current utterance.

    ``start_ms`` and ``end_ms`` count from the first audio fed to the stream; partials span from the
    utterance's start to the audio heard so far. ``confidence`` (0..1) is only scored on finals.
    """

    text: str
    is_final: bool
    start_ms: int = 0
    end_ms: int = 0
    confidence: float = 0.0


class AsrStream(ABC):
    """One call's recognizer. Not thread-safe: one call at a time, from any thread."""

    @abstractmethod
    def feed(self, pcm16: bytes) -> list[AsrResult]:
        """Audio in (PCM16 mono at the stream's rate); partial results (possibly none) out."""

    @abstractmethod
    def finish(self) -> AsrResult | None:
        """The final result of the utterance (None when nothing was recognized); the stream is
        then ready for the next utterance."""

    @abstractmethod
    def close(self) -> None:
        """Release the stream; an unfinished utterance is dropped. Closing twice is harmless."""

    def __enter__(self) -> AsrStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class AsrEngine(ABC):
    """A recognizer that opens streams; its models are shared by every stream of the process."""

    name = ""

    @abstractmethod
    def warm_up(self) -> None:
        """Load the models now rather than on the first call."""

    @abstractmethod
    def open(self, sample_rate: int, hints: list[str] | None = None) -> AsrStream:
        """A stream for one call; ``hints`` are words and phrases the call is likely to contain."""


AsrFactory = Callable[[AsrSettings], AsrEngine]
_REGISTRY: dict[str, AsrFactory] = {}


def register_asr_engine(name: str, factory: AsrFactory) -> None:
    """Make ``factory(settings)`` available as engine ``name`` (replacing an engine of that name)."""
    if not name or name == AUTO:
        raise ValueError(f"invalid asr engine name {name!r}")
    _REGISTRY[name] = factory


def create_asr_engine(name: str, settings: AsrSettings | None = None) -> AsrEngine:
    """The engine ``name`` (or ``auto``) made from the ``[asr]`` settings."""
    settings = settings or AsrSettings()
    resolved = resolve_asr_engine(name, settings)
    factory = _REGISTRY.get(resolved)
    if factory is None:
        known = ", ".join([AUTO, *sorted(_REGISTRY)])
        raise AsrEngineError(f"unknown asr engine {name!r}; known: {known}")
    return factory(settings)


def resolve_asr_engine(name: str, settings: AsrSettings) -> str:
    """The engine ``auto`` stands for: Vosk with a configured or installed model, else PocketSphinx."""
    if name != AUTO:
        return name
    if settings.vosk_model_path or find_vosk_model("en-us") is not None:
        return "vosk"
    return "pocketsphinx"


def find_vosk_model(lang: str, dirs: tuple[str, ...] | None = None) -> Path | None:
    """An installed Vosk model for ``lang`` (``vosk-model-<lang>...`` or ``vosk-model-small-<lang>...``)
    in ``dirs``, by default the folders Vosk downloads to; never downloads anything."""
    pattern = re.compile(rf"vosk-model(-small)?-{re.escape(lang)}(-|_|$)")
    for folder in VOSK_MODEL_DIRS if dirs is None else dirs:
        path = Path(os.path.expanduser(os.path.expandvars(folder)))
        if "$" in str(path) or not path.is_dir():
            continue
        for candidate in sorted(path.iterdir()):
            if candidate.is_dir() and pattern.match(candidate.name):
                return candidate
    return None
