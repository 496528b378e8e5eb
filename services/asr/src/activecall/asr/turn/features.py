"""Whisper log-mel features, the input of the Smart Turn model.

Smart Turn v3 is a Whisper-encoder classifier, so it must see exactly what Whisper's feature extractor
gives (a different mel scale or normalisation would silently skew its probabilities): 16 kHz audio,
the last 8 s (zero-padded in front when shorter), the waveform scaled to zero mean and unit variance,
a centred 25 ms Hann STFT every 10 ms, 80 Slaney mel bands up to 8 kHz, log10 clamped to 8 decades
below the loudest value and mapped by (x + 4) / 4. The result is 80 bands x 800 frames, mostly in
[-1, 1.5]. Written from that description with numpy alone (no torch, no transformers).
"""

from __future__ import annotations

import functools
from typing import Final

import numpy as np
import numpy.typing as npt

from activecall.audio import pcm16_to_float32, resample_float

MODEL_RATE: Final = 16_000
WINDOW_S: Final = 8
N_SAMPLES: Final = MODEL_RATE * WINDOW_S
N_FFT: Final = 400  # 25 ms
HOP: Final = 160  # 10 ms
N_MELS: Final = 80
N_FRAMES: Final = N_SAMPLES // HOP  # 800: Whisper drops the STFT's last frame
LOG_FLOOR: Final = 1e-10
DYNAMIC_RANGE: Final = 8.0  # decades kept below the loudest band
NORM_EPS: Final = 1e-7

Float32Array = npt.NDArray[np.float32]


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The Slaney mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    linear = hz * 3.0 / 200.0
    logarithmic = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(hz < 1000.0, linear, logarithmic)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    linear = mel * 200.0 / 3.0
    logarithmic = 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0)
    return np.where(mel < 15.0, linear, logarithmic)


@functools.cache
def mel_filterbank() -> npt.NDArray[np.float64]:
    """(N_MELS, N_FFT // 2 + 1) triangles evenly spaced in mels from 0 Hz to Nyquist, each scaled to
    unit area (Slaney normalisation), as librosa builds Whisper's filters."""
    edges_hz = _mel_to_hz(np.linspace(0.0, float(_hz_to_mel(np.array([MODEL_RATE / 2.0]))[0]), N_MELS + 2))
    bins_hz = np.arange(N_FFT // 2 + 1) * (MODEL_RATE / N_FFT)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bins_hz[None, :]) / (upper - centre)
    triangles = np.clip(np.minimum(rising, falling), 0.0, None)
    return triangles * (2.0 / (upper - lower))


@functools.cache
def _hann() -> npt.NDArray[np.float64]:
    n = np.arange(N_FFT)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)  # periodic, as torch.hann_window


def last_window(samples: Float32Array) -> Float32Array:
    """The last 8 s of 16 kHz samples; shorter audio is padded with zeros in front (the model was
    trained with the end of the turn at the end of the window)."""
    if samples.size >= N_SAMPLES:
        return np.ascontiguousarray(samples[-N_SAMPLES:], dtype=np.float32)
    return np.concatenate([np.zeros(N_SAMPLES - samples.size, dtype=np.float32), samples.astype(np.float32)])


def log_mel(window: Float32Array) -> Float32Array:
    """Whisper's normalised log-mel spectrogram of exactly N_SAMPLES samples: (N_MELS, N_FRAMES)."""
    if window.shape != (N_SAMPLES,):
        raise ValueError(f"expected {N_SAMPLES} samples, got shape {window.shape}")
    x = (window - window.mean()) / np.sqrt(window.var() + NORM_EPS)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    starts = np.arange(N_FRAMES + 1) * HOP
    frames = padded[starts[:, None] + np.arange(N_FFT)[None, :]]
    power = np.abs(np.fft.rfft(frames * _hann(), axis=1)) ** 2  # (frames, bins)
    mel = mel_filterbank() @ power[:-1].T  # (N_MELS, N_FRAMES)
    log = np.log10(np.maximum(mel, LOG_FLOOR))
    log = np.maximum(log, log.max() - DYNAMIC_RANGE)
    scaled: Float32Array = ((log + 4.0) / 4.0).astype(np.float32)
    return scaled


def model_input(pcm16: bytes, sample_rate: int) -> Float32Array:
    """The Smart Turn input for the audio up to now: (1, N_MELS, N_FRAMES) float32."""
    samples = pcm16_to_float32(pcm16)
    if sample_rate != MODEL_RATE:
        samples = resample_float(samples, sample_rate, MODEL_RATE)
    features: Float32Array = log_mel(last_window(samples))[None, :, :]
    return features
