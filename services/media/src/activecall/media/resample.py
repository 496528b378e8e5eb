"""Sample-rate conversion of int16 mono audio with libsoxr (8 kHz phone audio <-> engine rates).

soxr's fixed-rate engine works in large blocks: fed 20 ms chunks it returns nothing for several calls,
then about 100 ms at once. The streaming resampler therefore defaults to soxr's variable-rate engine
(`low_latency=True`), which returns output for every chunk after about 30 ms of start-up delay, at a few
more microseconds per chunk. Both keep the telephone band (to 3.4 kHz) flat and reject aliases by
more than 80 dB.

soxr dithers when it writes int16 itself, so two runs over the same input would differ in the last bit;
the filtering runs in float32 here and the result is rounded and clipped to int16, which keeps the
output a pure function of the input.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import soxr

Samples = npt.NDArray[np.int16]

QUALITIES: Final = ("QQ", "LQ", "MQ", "HQ", "VHQ")


class ResampleError(ValueError):
    """Audio or rates the resampler cannot take."""


def _as_samples(audio: Samples | bytes) -> Samples:
    if isinstance(audio, bytes | bytearray | memoryview):
        if len(audio) % 2:
            raise ResampleError(f"PCM16 input has an odd length of {len(audio)} bytes")
        return np.frombuffer(audio, dtype="<i2").astype(np.int16, copy=False)
    if audio.dtype != np.int16 or audio.ndim != 1:
        raise ResampleError(f"audio must be 1-D int16, not {audio.ndim}-D {audio.dtype}")
    return audio


_INT16_MIN: Final = np.float32(-32768)
_INT16_MAX: Final = np.float32(32767)


def _to_int16(samples: npt.NDArray[np.float32]) -> Samples:
    result: Samples = np.rint(samples.clip(_INT16_MIN, _INT16_MAX)).astype(np.int16)
    return result


def _check_rates(in_rate: int, out_rate: int, quality: str) -> None:
    if in_rate <= 0 or out_rate <= 0:
        raise ResampleError(f"sample rates must be positive, not {in_rate} -> {out_rate}")
    if quality not in QUALITIES:
        raise ResampleError(f"unknown soxr quality {quality!r}; use one of {', '.join(QUALITIES)}")


class Resampler:
    """Streaming resampler for one audio stream; keeps filter state between chunks.

    Feed chunks of any length to `process`; call `flush` once at the end of the stream to drain the
    filter delay. The total output then has round(total_input * out_rate / in_rate) samples.
    """

    def __init__(self, in_rate: int, out_rate: int, *, quality: str = "HQ", low_latency: bool = True) -> None:
        _check_rates(in_rate, out_rate, quality)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream: soxr.ResampleStream | None = None
        self._flushed = False
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="float32", quality=quality, vr=low_latency
            )

    @property
    def passthrough(self) -> bool:
        return self._stream is None

    def process(self, audio: Samples | bytes) -> Samples:
        """Resample one chunk; the result may be shorter or longer than the rate ratio suggests."""
        samples = _as_samples(audio)
        if self._flushed:
            raise ResampleError("the resampler was flushed; create a new one for a new stream")
        if self._stream is None:
            return samples
        return _to_int16(self._stream.resample_chunk(samples.astype(np.float32)))

    def flush(self) -> Samples:
        """Drain the samples still inside the filter; the resampler cannot be used afterwards."""
        if self._flushed:
            raise ResampleError("the resampler was already flushed")
        self._flushed = True
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        return _to_int16(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))


def resample(audio: Samples | bytes, in_rate: int, out_rate: int, *, quality: str = "HQ") -> Samples:
    """Resample a whole clip at once (no state, no start-up delay in the result)."""
    _check_rates(in_rate, out_rate, quality)
    samples = _as_samples(audio)
    if in_rate == out_rate:
        return samples
    return _to_int16(soxr.resample(samples.astype(np.float32), in_rate, out_rate, quality=quality))
