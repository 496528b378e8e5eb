"""ITU-T G.711 PCMU (mu-law) and PCMA (A-law) with numpy lookup tables.

Decoding indexes a 256-entry int16 table with the code bytes; encoding indexes a 65536-entry table with
the samples viewed as uint16, so one packet costs a couple of numpy calls whatever its length
(`ndarray.take`, cheaper than fancy indexing on arrays this small). The tables are
built once at import from the segment arithmetic of G.711 (the classic integer formulation in which
mu-law works on 14-bit and A-law on 13-bit magnitudes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

PCMU_PAYLOAD_TYPE: Final = 0  # RFC 3551 section 6, table 4
PCMA_PAYLOAD_TYPE: Final = 8
PCMU_SILENCE: Final = 0xFF  # code of the sample value 0
PCMA_SILENCE: Final = 0xD5

_ULAW_BIAS: Final = 0x84
_ULAW_CLIP: Final = 8159  # largest 14-bit magnitude before the bias
_SEG_SHIFT: Final = 4
_QUANT_MASK: Final = 0x0F
_SEG_MASK: Final = 0x70
_SIGN_BIT: Final = 0x80

Samples = npt.NDArray[np.int16]
Codes = npt.NDArray[np.uint8]


class G711Error(ValueError):
    """Input that cannot be G.711 encoded (odd byte count, wrong dtype)."""


def _segment(magnitude: npt.NDArray[np.int32], first_end: int) -> npt.NDArray[np.int32]:
    """Segment number 0..8 of a magnitude; segment k ends at first_end * 2**k - 1 (8 = overflow)."""
    ends = np.array([first_end * (1 << k) - 1 for k in range(8)], dtype=np.int32)
    return np.searchsorted(ends, magnitude, side="left").astype(np.int32)


def _build_ulaw_encode() -> Codes:
    samples = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit input
    negative = samples < 0
    magnitude = np.minimum(np.where(negative, -samples, samples), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(magnitude, 0x40)
    mantissa = (magnitude >> np.minimum(seg + 1, 8)) & _QUANT_MASK
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << _SEG_SHIFT) | mantissa)
    mask = np.where(negative, 0x7F, 0xFF)
    return _by_uint16_view((code ^ mask).astype(np.uint8))


def _build_alaw_encode() -> Codes:
    samples = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit input
    negative = samples < 0
    magnitude = np.where(negative, -samples - 1, samples)
    seg = _segment(magnitude, 0x20)
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    mantissa = (magnitude >> shift) & _QUANT_MASK
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << _SEG_SHIFT) | mantissa)
    mask = np.where(negative, 0x55, 0xD5)  # A-law inverts the even bits
    return _by_uint16_view((code ^ mask).astype(np.uint8))


def _by_uint16_view(codes_from_minus_32768: Codes) -> Codes:
    """Reorder a table built for -32768..32767 so that the uint16 view of a sample indexes it."""
    return np.roll(codes_from_minus_32768, -32768)


def _build_ulaw_decode() -> Samples:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes & _SEG_MASK) >> _SEG_SHIFT
    magnitude = (((codes & _QUANT_MASK) << 3) + _ULAW_BIAS) << exponent
    return np.where(codes & _SIGN_BIT, _ULAW_BIAS - magnitude, magnitude - _ULAW_BIAS).astype(np.int16)


def _build_alaw_decode() -> Samples:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (codes & _SEG_MASK) >> _SEG_SHIFT
    base = ((codes & _QUANT_MASK) << 4) + np.where(seg == 0, 8, 0x108)
    magnitude = np.where(seg > 1, base << np.maximum(seg - 1, 0), base)
    return np.where(codes & _SIGN_BIT, magnitude, -magnitude).astype(np.int16)


ULAW_ENCODE_TABLE: Final[Codes] = _build_ulaw_encode()
ALAW_ENCODE_TABLE: Final[Codes] = _build_alaw_encode()
ULAW_DECODE_TABLE: Final[Samples] = _build_ulaw_decode()
ALAW_DECODE_TABLE: Final[Samples] = _build_alaw_decode()
for _table in (ULAW_ENCODE_TABLE, ALAW_ENCODE_TABLE, ULAW_DECODE_TABLE, ALAW_DECODE_TABLE):
    _table.flags.writeable = False


_INT16: Final = np.dtype(np.int16)
_UINT8: Final = np.dtype(np.uint8)


def _as_uint16(samples: Samples | bytes) -> npt.NDArray[np.uint16]:
    if isinstance(samples, np.ndarray):
        # Identity first: the common case costs one pointer comparison on the per-packet path.
        if samples.dtype is not _INT16 and samples.dtype != _INT16:
            raise G711Error(f"PCM16 input must be int16, not {samples.dtype}")
        return samples.view(np.uint16)
    if len(samples) % 2:
        raise G711Error(f"PCM16 input has an odd length of {len(samples)} bytes")
    return np.frombuffer(samples, dtype="<u2")


def pcmu_encode(samples: Samples | bytes) -> bytes:
    """Encode int16 samples (array, or little-endian PCM16 bytes) to mu-law codes (G.711 table 2a)."""
    return ULAW_ENCODE_TABLE.take(_as_uint16(samples)).tobytes()


def pcma_encode(samples: Samples | bytes) -> bytes:
    """Encode int16 samples (array, or little-endian PCM16 bytes) to A-law codes (G.711 table 1a)."""
    return ALAW_ENCODE_TABLE.take(_as_uint16(samples)).tobytes()


def pcmu_decode(codes: bytes) -> Samples:
    """Decode mu-law codes to int16 samples (G.711 table 2b)."""
    return ULAW_DECODE_TABLE.take(np.frombuffer(codes, dtype=_UINT8))


def pcma_decode(codes: bytes) -> Samples:
    """Decode A-law codes to int16 samples (G.711 table 1b)."""
    return ALAW_DECODE_TABLE.take(np.frombuffer(codes, dtype=_UINT8))


@dataclass(frozen=True)
class G711Codec:
    """One G.711 law with its static RTP payload type (RFC 3551 section 4.5.14)."""

    name: str
    payload_type: int
    silence_code: int
    encode_table: Codes
    decode_table: Samples

    def encode(self, samples: Samples | bytes) -> bytes:
        return self.encode_table.take(_as_uint16(samples)).tobytes()

    def decode(self, codes: bytes) -> Samples:
        return self.decode_table.take(np.frombuffer(codes, dtype=_UINT8))

    def decode_pcm16(self, codes: bytes) -> bytes:
        """Decode to PCM16 bytes in native order, the form VAD and the bus take."""
        pcm: bytes = self.decode(codes).tobytes()
        return pcm

    def decode_many(self, payloads: list[bytes]) -> list[bytes]:
        """``decode_pcm16`` of each payload, in one table lookup for all of them."""
        if len(payloads) == 1:
            return [self.decode_pcm16(payloads[0])]
        pcm: bytes = self.decode_table.take(np.frombuffer(b"".join(payloads), dtype=_UINT8)).tobytes()
        decoded = []
        start = 0
        for payload in payloads:
            end = start + 2 * len(payload)
            decoded.append(pcm[start:end])
            start = end
        return decoded

    def silence(self, samples: int) -> bytes:
        """Payload of `samples` samples of silence."""
        return bytes((self.silence_code,)) * samples


PCMU: Final = G711Codec("PCMU", PCMU_PAYLOAD_TYPE, PCMU_SILENCE, ULAW_ENCODE_TABLE, ULAW_DECODE_TABLE)
PCMA: Final = G711Codec("PCMA", PCMA_PAYLOAD_TYPE, PCMA_SILENCE, ALAW_ENCODE_TABLE, ALAW_DECODE_TABLE)
CODECS_BY_PAYLOAD_TYPE: Final = {PCMU.payload_type: PCMU, PCMA.payload_type: PCMA}
CODECS_BY_NAME: Final = {PCMU.name: PCMU, PCMA.name: PCMA}
