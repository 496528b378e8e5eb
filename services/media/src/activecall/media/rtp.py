"""RTP fixed header and packet (RFC 3550 section 5.1), sequence arithmetic and rtcp-mux demultiplexing."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

RTP_VERSION: Final = 2
RTP_HEADER_LENGTH: Final = 12
RTP_MAX_CSRC: Final = 15
RTP_EXTENSION_HEADER_LENGTH: Final = 4
RTP_MAX_PAYLOAD_TYPE: Final = 127
# RFC 5761 section 4: with rtcp-mux, RTP payload types 64-95 are reserved so that RTCP packet types
# 192-223 (whose first bit lands on the RTP marker bit) stay distinguishable.
RTCP_MUX_PAYLOAD_TYPE_MIN: Final = 64
RTCP_MUX_PAYLOAD_TYPE_MAX: Final = 95

_UINT16_MODULO: Final = 1 << 16
_UINT32_MODULO: Final = 1 << 32
_HEADER: Final = struct.Struct("!BBHII")
_EXTENSION_HEADER: Final = struct.Struct("!HH")
_PLAIN_FIRST_OCTET: Final = RTP_VERSION << 6  # no padding, no extension, no CSRC


class RtpError(ValueError):
    """Malformed RTP packet, or a packet that cannot be serialised."""


def uint16_add(a: int, b: int) -> int:
    """Add modulo 2**16, as sequence numbers do (RFC 3550 section 5.1)."""
    return (a + b) & 0xFFFF


def uint16_gt(a: int, b: int) -> bool:
    """True if sequence number `a` is newer than `b` across the wrap (half-range comparison)."""
    half = _UINT16_MODULO >> 1
    return (a > b and a - b < half) or (a < b and b - a > half)


def uint16_gte(a: int, b: int) -> bool:
    return a == b or uint16_gt(a, b)


def seq_delta(a: int, b: int) -> int:
    """Signed distance `a - b` between two sequence numbers, in -32768..32767."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def uint32_add(a: int, b: int) -> int:
    """Add modulo 2**32, as RTP timestamps do."""
    return (a + b) & 0xFFFFFFFF


def uint32_gt(a: int, b: int) -> bool:
    """True if timestamp `a` is newer than `b` across the wrap."""
    half = _UINT32_MODULO >> 1
    return (a > b and a - b < half) or (a < b and b - a > half)


def timestamp_delta(a: int, b: int) -> int:
    """Signed distance `a - b` between two RTP timestamps."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def is_rtcp(data: bytes) -> bool:
    """True if a datagram on an rtcp-mux port is RTCP rather than RTP (RFC 5761 section 4)."""
    return len(data) >= 2 and RTCP_MUX_PAYLOAD_TYPE_MIN <= (data[1] & 0x7F) <= RTCP_MUX_PAYLOAD_TYPE_MAX


@dataclass(slots=True)
class RtpPacket:
    """An RTP packet (RFC 3550 section 5.1).

    `padding_size` counts every padding octet including the trailing count octet (0 = no padding); the
    padding is stripped from `payload` on parse and written as zeros followed by the count on build.
    `extension_profile` is None when the packet carries no header extension (RFC 3550 section 5.3.1);
    `extension_data` is then empty, otherwise its length is a multiple of 4.
    """

    payload_type: int = 0
    marker: bool = False
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    payload: bytes = b""
    csrc: list[int] = field(default_factory=list)
    extension_profile: int | None = None
    extension_data: bytes = b""
    padding_size: int = 0
    version: int = RTP_VERSION

    @property
    def padding(self) -> bool:
        return self.padding_size > 0

    @property
    def extension(self) -> bool:
        return self.extension_profile is not None

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet; raises RtpError naming the first violated rule."""
        if len(data) < RTP_HEADER_LENGTH:
            raise RtpError(f"RTP packet length {len(data)} is less than {RTP_HEADER_LENGTH} bytes")
        first, second, sequence_number, timestamp, ssrc = _HEADER.unpack_from(data)
        if first == _PLAIN_FIRST_OCTET:  # the common packet: nothing between header and payload
            return cls(
                second & 0x7F, bool(second & 0x80), sequence_number, timestamp, ssrc, data[12:], [], None
            )
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP packet has version {version}, expected {RTP_VERSION}")
        end = _payload_end(data) if first & 0x20 else len(data)
        offset, csrc = _parse_csrc(data, first & 0x0F, end)
        extension_profile: int | None = None
        extension_data = b""
        if first & 0x10:
            offset, extension_profile, extension_data = _parse_extension(data, offset, end)
        # Positional arguments in field order: keywords double the cost of this per-packet call.
        return cls(
            second & 0x7F,
            bool(second & 0x80),
            sequence_number,
            timestamp,
            ssrc,
            data[offset:end],
            csrc,
            extension_profile,
            extension_data,
            len(data) - end,
            version,
        )

    def __bytes__(self) -> bytes:
        self._check_serialisable()
        first = (
            (self.version << 6)
            | (0x20 if self.padding_size else 0)
            | (0x10 if self.extension_profile is not None else 0)
            | len(self.csrc)
        )
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [_HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension_profile is not None:
            words = len(self.extension_data) // 4
            parts.append(_EXTENSION_HEADER.pack(self.extension_profile, words))
            parts.append(self.extension_data)
        parts.append(self.payload)
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes((self.padding_size,)))
        return b"".join(parts)

    def _check_serialisable(self) -> None:
        if not 0 <= self.payload_type <= RTP_MAX_PAYLOAD_TYPE:
            raise RtpError(f"RTP payload type {self.payload_type} is outside 0..127")
        if len(self.csrc) > RTP_MAX_CSRC:
            raise RtpError(f"RTP packet has {len(self.csrc)} CSRCs, at most {RTP_MAX_CSRC} fit")
        if len(self.extension_data) % 4:
            raise RtpError("RTP header extension length is not a multiple of 4 bytes")
        if not 0 <= self.padding_size <= 255:
            raise RtpError(f"RTP padding size {self.padding_size} is outside 0..255")


def _payload_end(data: bytes) -> int:
    """Offset where the payload of a padded packet ends: the last octet counts the padding (RFC 3550 5.1)."""
    padding_size = data[-1]
    if padding_size == 0:
        raise RtpError("RTP padding bit is set but the padding count is 0")
    if padding_size > len(data) - RTP_HEADER_LENGTH:
        raise RtpError(f"RTP padding count {padding_size} exceeds the packet")
    return len(data) - padding_size


def _parse_csrc(data: bytes, count: int, end: int) -> tuple[int, list[int]]:
    if not count:
        return RTP_HEADER_LENGTH, []
    offset = RTP_HEADER_LENGTH + 4 * count
    if offset > end:
        raise RtpError(f"RTP packet is truncated in its {count} CSRC identifiers")
    return offset, list(struct.unpack_from(f"!{count}I", data, RTP_HEADER_LENGTH))


def _parse_extension(data: bytes, offset: int, end: int) -> tuple[int, int, bytes]:
    if offset + RTP_EXTENSION_HEADER_LENGTH > end:
        raise RtpError("RTP packet is truncated in its header extension header")
    profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
    start = offset + RTP_EXTENSION_HEADER_LENGTH
    stop = start + 4 * words
    if stop > end:
        raise RtpError(f"RTP header extension of {words} words is truncated")
    return stop, profile, data[start:stop]
