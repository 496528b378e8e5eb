"""The interface of speech synthesis engines (:class:`TtsEngine`) and the registry that makes them
by name; :mod:`activecall.tts.engines` registers the built-in ones."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

from activecall.config import TtsSettings

AUTO = "auto"


class TtsEngineError(RuntimeError):
    """An engine that cannot be created or used (unknown name, missing package, missing model)."""


class UnknownVoiceError(TtsEngineError, ValueError):
    """A voice the engine does not have."""


class TtsEngine(ABC):
    name = ""

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Rate of the PCM this engine produces."""

    @abstractmethod
    def warm_up(self) -> None:
        """Load the model and run it once, so the first call pays nothing."""

    @abstractmethod
    def synthesize(self, text: str, voice: str | None = None) -> Iterator[bytes]:
        """PCM16 mono little-endian chunks of ``text`` spoken, at :attr:`sample_rate`."""


TtsFactory = Callable[[TtsSettings], TtsEngine]
_REGISTRY: dict[str, TtsFactory] = {}


def register_tts_engine(name: str, factory: TtsFactory) -> None:
    """Make ``factory(settings)`` available as engine ``name`` (replacing an engine of that name)."""
    if not name or name == AUTO:
        raise ValueError(f"invalid tts engine name {name!r}")
    _REGISTRY[name] = factory


def tts_engine_names() -> list[str]:
    return sorted(_REGISTRY)


def create_tts_engine(name: str, settings: TtsSettings | None = None) -> TtsEngine:
    """The engine ``name`` (or ``auto``) made from the ``[tts]`` settings."""
    settings = settings or TtsSettings()
    resolved = resolve_tts_engine(name, settings)
    factory = _REGISTRY.get(resolved)
    if factory is None:
        known = ", ".join([AUTO, *sorted(_REGISTRY)])
        raise TtsEngineError(f"unknown tts engine {name!r}; known: {known}")
    return factory(settings)


def resolve_tts_engine(name: str, settings: TtsSettings) -> str:
    if name != AUTO:
        return name
    return "coqui" if settings.coqui_model else "piper"
