"""Audio helpers shared by the services: PCM16 <-> numpy, resampling, alignment, WAV, ASR scoring.

All audio on the bus is signed 16-bit little-endian mono PCM ("pcm16"), as in `call:{id}:audio:in`
and `call:{id}:audio:out`. Numpy arrays of float samples use the range [-1.0, 1.0).
"""

from __future__ import annotations

import re
import unicodedata
import wave
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

PCM16_WIDTH = 2
PCM16_FULL_SCALE = 32768.0

Samples = NDArray[Any]


class AudioError(Exception):
    """Base error of the audio helpers."""


class AudioFormatError(AudioError, ValueError):
    """Audio data or a file that does not have the expected format."""


# --- PCM16 <-> numpy ------------------------------------------------------------------------------


def int16_to_pcm16(samples: NDArray[np.int16]) -> bytes:
    """Little-endian PCM16 bytes of int16 samples."""
    return np.asarray(samples, dtype="<i2").tobytes()


def pcm16_to_float32(pcm16: bytes) -> NDArray[np.float32]:
    """Samples of PCM16 bytes scaled to [-1.0, 1.0)."""
    _check_pcm16(pcm16)
    return (np.frombuffer(pcm16, dtype="<i2") / PCM16_FULL_SCALE).astype(np.float32)


def float_to_int16(samples: Samples) -> NDArray[np.int16]:
    """Float samples in [-1.0, 1.0] rounded to int16; values outside the range are clipped."""
    scaled = np.rint(np.asarray(samples, dtype=np.float64) * PCM16_FULL_SCALE)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def float_to_pcm16(samples: Samples) -> bytes:
    """PCM16 bytes of float samples in [-1.0, 1.0]; values outside the range are clipped."""
    return int16_to_pcm16(float_to_int16(samples))


def _check_pcm16(pcm16: bytes) -> None:
    if len(pcm16) % PCM16_WIDTH:
        raise AudioFormatError(f"PCM16 data has an odd length ({len(pcm16)} bytes)")


def _as_float(signal: bytes | Samples) -> NDArray[np.float64]:
    if isinstance(signal, bytes | bytearray | memoryview):
        return pcm16_to_float32(bytes(signal)).astype(np.float64)
    array = np.asarray(signal)
    if array.ndim != 1:
        raise AudioFormatError(f"expected mono samples (1-D), got shape {array.shape}")
    if array.dtype == np.int16:
        return array / PCM16_FULL_SCALE
    return array.astype(np.float64)


# --- Resampling -----------------------------------------------------------------------------------


def resample(pcm16: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample PCM16 audio at once (a whole sentence or utterance) with soxr, high quality."""
    _check_pcm16(pcm16)
    if from_rate == to_rate:
        _check_rate(from_rate)
        return pcm16
    return float_to_pcm16(resample_float(pcm16_to_float32(pcm16), from_rate, to_rate))


def resample_float(samples: Samples, from_rate: int, to_rate: int) -> NDArray[np.float32]:
    """Resample float samples (int16 ones are scaled to floats first) at once with soxr."""
    _check_rate(from_rate)
    _check_rate(to_rate)
    signal = _as_float(samples).astype(np.float32)
    if from_rate == to_rate or not len(signal):
        return signal
    import soxr  # only the services that resample (asr, tts, media) install soxr

    return np.asarray(soxr.resample(signal, from_rate, to_rate, quality="HQ"), dtype=np.float32)


def trim_leading_silence(pcm16: bytes, sample_rate: int, threshold: int = 300, keep_ms: int = 10) -> bytes:
    """``pcm16`` without the near-silence before its first sound (``threshold``: sample magnitude,
    300 is about -40 dBFS), keeping ``keep_ms`` of it so the onset is not clipped. A synthesizer's
    lead-in is dead air the caller waits through before every answer."""
    _check_pcm16(pcm16)
    samples = np.frombuffer(pcm16, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if not loud.size:
        return pcm16
    start = max(0, int(loud[0]) - sample_rate * keep_ms // 1000)
    return pcm16[2 * start :]


def _check_rate(rate: int) -> None:
    if rate <= 0:
        raise AudioFormatError(f"sample rate must be positive, got {rate}")


# --- Alignment ------------------------------------------------------------------------------------


class NccPeak(NamedTuple):
    """Best match of a template: normalised correlation `value` (at most 1.0) at `lag` samples."""

    value: float
    lag: int


def ncc_peak(a: bytes | Samples, b: bytes | Samples, max_lag: int | None = None) -> NccPeak:
    """Where `b` best matches inside `a`: the peak of their normalised cross-correlation.

    At lag k, ``sum(a[k + n] * b[n]) / sqrt(sum(a[k + n] ** 2) * sum(b ** 2))`` over the samples
    where both exist, so a copy of `b` that starts k samples into `a`, at any gain and among other
    sound, scores 1.0 at lag k; a negative lag means `b` starts before `a`. The template's whole
    energy is in the denominator, so a lag where the signals barely overlap cannot score high.
    PCM16 bytes are accepted as well as sample arrays; `max_lag` bounds |lag|.
    """
    x, y = _as_float(a), _as_float(b)
    template_energy = float(np.dot(y, y))
    if template_energy == 0.0 or not np.any(x):
        return NccPeak(0.0, 0)
    size = 1 << (len(x) + len(y) - 1).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    # correlation[k] = sum_n x[k + n] * y[n]; negative lags wrap around to the end.
    lags = np.arange(-(len(y) - 1), len(x))
    numerator = np.concatenate([correlation[size - (len(y) - 1) :], correlation[: len(x)]])
    window_energy = _window_energy(x, len(y))
    denominator = np.sqrt(window_energy * template_energy)
    tiny = template_energy * 1e-12
    values = np.where(denominator > tiny, numerator / np.maximum(denominator, tiny), 0.0)
    if max_lag is not None:
        keep = np.abs(lags) <= max_lag
        lags, values = lags[keep], values[keep]
    best = int(np.argmax(values))
    return NccPeak(float(values[best]), int(lags[best]))


def _window_energy(x: NDArray[np.float64], width: int) -> NDArray[np.float64]:
    """Energy of x[k : k + width] for k from -(width - 1) to len(x) - 1 (outside x counts as 0)."""
    cumulative = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(-(width - 1), len(x))
    low = np.clip(starts, 0, len(x))
    high = np.clip(starts + width, 0, len(x))
    energy: NDArray[np.float64] = np.maximum(cumulative[high] - cumulative[low], 0.0)
    return energy


# --- WAV files ------------------------------------------------------------------------------------


class WavAudio(NamedTuple):
    """Mono PCM16 audio read from a WAV file."""

    pcm16: bytes
    sample_rate: int


def read_wav(path: str | Path) -> WavAudio:
    """Read a 16-bit PCM WAV file; stereo and wider files are mixed down to mono."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != PCM16_WIDTH:
            raise AudioFormatError(f"{path}: sample width {wav.getsampwidth() * 8} bits, expected 16")
        channels, rate = wav.getnchannels(), wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    if channels == 1:
        return WavAudio(frames, rate)
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).mean(axis=1)
    return WavAudio(int16_to_pcm16(np.rint(samples).astype(np.int16)), rate)


def write_wav(path: str | Path, pcm16: bytes, sample_rate: int) -> None:
    """Write mono PCM16 audio as a WAV file."""
    _check_pcm16(pcm16)
    _check_rate(sample_rate)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(PCM16_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm16)


# --- Recognition scoring --------------------------------------------------------------------------

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_NOT_WORD = re.compile(r"[^\w']+")
# Contractions with one reading, expanded so "we're" and "we are" score alike (as scoring tools'
# GLM files do). Ambiguous ones ('s: is, has or possessive; 'd: had or would) stay as written.
_IRREGULAR_NEGATIONS = {"can't": "can not", "won't": "will not", "shan't": "shall not"}
_CONTRACTION = re.compile(r"^(\w+)('re|'m|'ve|'ll|n't)$")
_CONTRACTED = {"'re": "are", "'m": "am", "'ve": "have", "'ll": "will", "n't": "not"}


def split_words(text: str) -> list[str]:
    """Words of a text as recognizers spell them: case folded, punctuation and hyphens removed.

    Apostrophes inside words stay ("that's", "o'clock"); leading and trailing ones (quotes) go.
    """
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).casefold()
    words = (word.strip("'") for word in _NOT_WORD.sub(" ", text).split())
    return [word for word in words if word]


def normalize_words(text: str) -> list[str]:
    """Words of a transcript for scoring: `split_words`, with the contractions that have a single
    reading expanded ("we're" -> "we are", "don't" -> "do not")."""
    return [part for word in split_words(text) for part in _expand(word)]


def _expand(word: str) -> list[str]:
    if word in _IRREGULAR_NEGATIONS:
        return _IRREGULAR_NEGATIONS[word].split()
    match = _CONTRACTION.match(word)
    if match is None:
        return [word]
    return [match.group(1), _CONTRACTED[match.group(2)]]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count) after `normalize_words`."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        current = [i]
        for j, hyp_word in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1], len(ref)


def word_accuracy(reference: str, hypothesis: str) -> float:
    """1 - word error rate (word-level Levenshtein distance over the reference length).

    Clamped at 0.0: a run of insertions makes WER exceed 1, and no transcript scores below nothing.
    An empty reference scores 1.0 against an empty hypothesis and 0.0 against anything else.
    """
    return corpus_word_accuracy([(reference, hypothesis)])


def corpus_word_accuracy(pairs: Iterable[tuple[str, str]]) -> float:
    """1 - WER over a corpus of (reference, hypothesis) pairs (total errors over total words),
    clamped at 0.0 like `word_accuracy`."""
    errors = words = 0
    for reference, hypothesis in pairs:
        pair_errors, pair_words = word_errors(reference, hypothesis)
        errors += pair_errors
        words += pair_words
    if words == 0:
        return 1.0 if errors == 0 else 0.0
    return max(0.0, 1.0 - errors / words)
