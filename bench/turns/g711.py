"""G.711 mu-law (ITU-T G.711) with tables of our own: PCM16 <-> one byte a sample."""

from __future__ import annotations

import numpy as np

BIAS = 0x84
CLIP = 32636  # 8159 << 2: the 14-bit clip
SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
SILENCE = 0xFF  # mu-law of 0


def _decode_byte(byte: int) -> int:
    u = ~byte & 0xFF
    sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS
    return -magnitude if sign else magnitude


DECODE = np.array([_decode_byte(b) for b in range(256)], dtype=np.int16)


def _encode_sample(sample: int) -> int:
    """The classic 14-bit reference algorithm (as Sun's g711.c and CPython's audioop)."""
    value = sample >> 2
    if value < 0:
        value, mask = -value, 0x7F
    else:
        mask = 0xFF
    value = min(value, CLIP >> 2) + (BIAS >> 2)
    segment = next((i for i, end in enumerate(SEGMENT_ENDS) if value <= end), 8)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


# One entry per PCM16 value, indexed by value + 32768.
ENCODE = np.array([_encode_sample(s) for s in range(-32768, 32768)], dtype=np.uint8)


def encode(pcm: np.ndarray) -> bytes:
    """int16 samples -> mu-law bytes."""
    return ENCODE[pcm.astype(np.int32) + 32768].tobytes()


def decode(payload: bytes) -> np.ndarray:
    """mu-law bytes -> int16 samples."""
    return DECODE[np.frombuffer(payload, dtype=np.uint8)]
