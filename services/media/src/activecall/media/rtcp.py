"""RTCP (RFC 3550 section 6): SR, RR, SDES, BYE, compound packets, receiver statistics, NTP time.

Packet types this module does not model (APP, RTPFB, PSFB, XR) are kept as `RtcpUnknownPacket` so a
compound packet from a richer peer still parses and re-serialises unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

RTCP_VERSION: Final = 2
RTCP_HEADER_LENGTH: Final = 4
RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203
RTCP_APP: Final = 204
RTCP_MAX_COUNT: Final = 31
REPORT_BLOCK_LENGTH: Final = 24
SENDER_INFO_LENGTH: Final = 20

SDES_END: Final = 0
SDES_CNAME: Final = 1
SDES_NAME: Final = 2
SDES_EMAIL: Final = 3
SDES_PHONE: Final = 4
SDES_LOC: Final = 5
SDES_TOOL: Final = 6
SDES_NOTE: Final = 7
SDES_PRIV: Final = 8

NTP_UNIX_EPOCH_OFFSET: Final = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
PACKETS_LOST_MAX: Final = 0x7FFFFF
PACKETS_LOST_MIN: Final = -0x800000

_HEADER: Final = struct.Struct("!BBH")
_REPORT_BLOCK: Final = struct.Struct("!IB3sIIII")
_SENDER_INFO: Final = struct.Struct("!QIII")
_SSRC: Final = struct.Struct("!I")


class RtcpError(ValueError):
    """Malformed RTCP packet, or a packet that cannot be serialised."""


# ---------------------------------------------------------------------------------------------------------
# NTP timestamps (RFC 3550 section 4)


def ntp_from_unix(unix_time: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time in seconds."""
    return round((unix_time + NTP_UNIX_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_to_unix(ntp: int) -> float:
    """Unix time in seconds of a 64-bit NTP timestamp."""
    return ntp / (1 << 32) - NTP_UNIX_EPOCH_OFFSET


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, the form LSR uses (RFC 3550 section 6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def seconds_to_dlsr(seconds: float) -> int:
    """A delay in units of 1/65536 s, as DLSR carries it (RFC 3550 section 6.4.1)."""
    return max(0, min(0xFFFFFFFF, round(seconds * 65536)))


def round_trip_time(arrival_ntp: int, lsr: int, dlsr: int) -> float | None:
    """Round-trip time in seconds from a report block received at `arrival_ntp` (RFC 3550 6.4.1).

    None when the peer has not yet received a sender report from us (LSR is 0).
    """
    if lsr == 0:
        return None
    delta = (ntp_middle32(arrival_ntp) - lsr - dlsr) & 0xFFFFFFFF
    # A negative result (clock steps, bogus DLSR) shows up as a huge unsigned value.
    return None if delta & 0x80000000 else delta / 65536


# ---------------------------------------------------------------------------------------------------------
# Report blocks and packets


@dataclass
class RtcpReportBlock:
    """One reception report block (RFC 3550 section 6.4.1)."""

    ssrc: int
    fraction_lost: int = 0
    packets_lost: int = 0  # cumulative, 24-bit signed: duplicates can make it negative
    highest_sequence: int = 0  # extended: cycles << 16 | highest sequence number
    jitter: int = 0  # in timestamp units
    lsr: int = 0
    dlsr: int = 0

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> RtcpReportBlock:
        if len(data) - offset < REPORT_BLOCK_LENGTH:
            raise RtcpError("RTCP report block is truncated")
        ssrc, fraction_lost, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        return cls(
            ssrc=ssrc,
            fraction_lost=fraction_lost,
            packets_lost=int.from_bytes(lost, "big", signed=True),
            highest_sequence=highest,
            jitter=jitter,
            lsr=lsr,
            dlsr=dlsr,
        )

    def __bytes__(self) -> bytes:
        if not PACKETS_LOST_MIN <= self.packets_lost <= PACKETS_LOST_MAX:
            raise RtcpError(f"cumulative packets lost {self.packets_lost} does not fit 24 signed bits")
        return _REPORT_BLOCK.pack(
            self.ssrc,
            self.fraction_lost,
            self.packets_lost.to_bytes(3, "big", signed=True),
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )


@dataclass
class RtcpSenderInfo:
    """Sender information of an SR (RFC 3550 section 6.4.1)."""

    ntp_timestamp: int = 0
    rtp_timestamp: int = 0
    packet_count: int = 0
    octet_count: int = 0

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> RtcpSenderInfo:
        if len(data) - offset < SENDER_INFO_LENGTH:
            raise RtcpError("RTCP sender info is truncated")
        return cls(*_SENDER_INFO.unpack_from(data, offset))

    def __bytes__(self) -> bytes:
        return _SENDER_INFO.pack(self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count)


@dataclass
class RtcpSrPacket:
    """Sender report (RFC 3550 section 6.4.1)."""

    ssrc: int
    sender_info: RtcpSenderInfo = field(default_factory=RtcpSenderInfo)
    reports: list[RtcpReportBlock] = field(default_factory=list)

    packet_type = RTCP_SR

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> RtcpSrPacket:
        """Parse the part after the common header; profile-specific extensions are dropped."""
        if len(body) < 4 + SENDER_INFO_LENGTH + count * REPORT_BLOCK_LENGTH:
            raise RtcpError(f"RTCP SR with {count} report blocks is truncated")
        (ssrc,) = _SSRC.unpack_from(body)
        sender_info = RtcpSenderInfo.parse(body, 4)
        return cls(ssrc, sender_info, _parse_reports(body, 4 + SENDER_INFO_LENGTH, count))

    def __bytes__(self) -> bytes:
        body = _SSRC.pack(self.ssrc) + bytes(self.sender_info) + _pack_reports(self.reports)
        return _pack_packet(RTCP_SR, len(self.reports), body)


@dataclass
class RtcpRrPacket:
    """Receiver report (RFC 3550 section 6.4.2)."""

    ssrc: int
    reports: list[RtcpReportBlock] = field(default_factory=list)

    packet_type = RTCP_RR

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> RtcpRrPacket:
        if len(body) < 4 + count * REPORT_BLOCK_LENGTH:
            raise RtcpError(f"RTCP RR with {count} report blocks is truncated")
        (ssrc,) = _SSRC.unpack_from(body)
        return cls(ssrc, _parse_reports(body, 4, count))

    def __bytes__(self) -> bytes:
        body = _SSRC.pack(self.ssrc) + _pack_reports(self.reports)
        return _pack_packet(RTCP_RR, len(self.reports), body)


@dataclass
class RtcpSdesChunk:
    """One SDES chunk: a source and its (item type, value) pairs (RFC 3550 section 6.5)."""

    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def cname(self) -> str | None:
        for item_type, value in self.items:
            if item_type == SDES_CNAME:
                return value.decode("utf-8", errors="replace")
        return None

    def __bytes__(self) -> bytes:
        parts = [_SSRC.pack(self.ssrc)]
        for item_type, value in self.items:
            if not 0 < item_type <= 255 or len(value) > 255:
                raise RtcpError(f"SDES item type {item_type} with {len(value)} bytes cannot be encoded")
            parts.append(bytes((item_type, len(value))) + value)
        # The item list ends with at least one null octet, then pads the chunk to 32 bits.
        chunk = b"".join(parts) + b"\x00"
        return chunk + bytes(-len(chunk) % 4)


@dataclass
class RtcpSdesPacket:
    """Source description (RFC 3550 section 6.5)."""

    chunks: list[RtcpSdesChunk] = field(default_factory=list)

    packet_type = RTCP_SDES

    @classmethod
    def with_cname(cls, ssrc: int, cname: str) -> RtcpSdesPacket:
        return cls([RtcpSdesChunk(ssrc, [(SDES_CNAME, cname.encode("utf-8"))])])

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> RtcpSdesPacket:
        offset = 0
        chunks = []
        for _ in range(count):
            offset, chunk = _parse_sdes_chunk(body, offset)
            chunks.append(chunk)
        return cls(chunks)

    def __bytes__(self) -> bytes:
        body = b"".join(bytes(chunk) for chunk in self.chunks)
        return _pack_packet(RTCP_SDES, len(self.chunks), body)


@dataclass
class RtcpByePacket:
    """Goodbye (RFC 3550 section 6.6)."""

    sources: list[int] = field(default_factory=list)
    reason: bytes | None = None

    packet_type = RTCP_BYE

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> RtcpByePacket:
        end = 4 * count
        if len(body) < end:
            raise RtcpError(f"RTCP BYE with {count} sources is truncated")
        sources = list(struct.unpack_from(f"!{count}I", body))
        reason = None
        if len(body) > end:
            length = body[end]
            if end + 1 + length > len(body):
                raise RtcpError("RTCP BYE reason is truncated")
            reason = body[end + 1 : end + 1 + length]
        return cls(sources, reason)

    def __bytes__(self) -> bytes:
        body = struct.pack(f"!{len(self.sources)}I", *self.sources)
        if self.reason is not None:
            if len(self.reason) > 255:
                raise RtcpError(f"RTCP BYE reason of {len(self.reason)} bytes does not fit")
            reason = bytes((len(self.reason),)) + self.reason
            body += reason + bytes(-len(reason) % 4)
        return _pack_packet(RTCP_BYE, len(self.sources), body)


@dataclass
class RtcpUnknownPacket:
    """Any other packet type, kept as its count field and raw body."""

    packet_type: int
    count: int = 0
    body: bytes = b""

    def __bytes__(self) -> bytes:
        return _pack_packet(self.packet_type, self.count, self.body)


RtcpPacket = RtcpSrPacket | RtcpRrPacket | RtcpSdesPacket | RtcpByePacket | RtcpUnknownPacket


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet (RFC 3550 section 6.1) into its packets, in order.

    Only the last packet may carry padding (RFC 3550 section 6.4.1, SRTCP encrypts the whole compound).
    """
    packets: list[RtcpPacket] = []
    offset = 0
    if not data:
        raise RtcpError("RTCP packet is empty")
    while offset < len(data):
        offset, packet = _parse_one(data, offset)
        packets.append(packet)
    return packets


def serialize_compound(packets: Sequence[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound packet (RFC 3550 section 6.1)."""
    return b"".join(bytes(packet) for packet in packets)


def _parse_one(data: bytes, offset: int) -> tuple[int, RtcpPacket]:
    if len(data) - offset < RTCP_HEADER_LENGTH:
        raise RtcpError(f"RTCP header at offset {offset} is truncated")
    first, packet_type, words = _HEADER.unpack_from(data, offset)
    version = first >> 6
    if version != RTCP_VERSION:
        raise RtcpError(f"RTCP packet has version {version}, expected {RTCP_VERSION}")
    end = offset + 4 * (words + 1)
    if end > len(data):
        raise RtcpError(f"RTCP packet type {packet_type} of {4 * (words + 1)} bytes is truncated")
    body = data[offset + RTCP_HEADER_LENGTH : end]
    if first & 0x20:
        if end != len(data):
            raise RtcpError("RTCP padding is only allowed on the last packet of a compound")
        body = _strip_padding(body)
    return end, _parse_body(packet_type, first & 0x1F, body)


def _parse_body(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == RTCP_SR:
        return RtcpSrPacket.parse_body(count, body)
    if packet_type == RTCP_RR:
        return RtcpRrPacket.parse_body(count, body)
    if packet_type == RTCP_SDES:
        return RtcpSdesPacket.parse_body(count, body)
    if packet_type == RTCP_BYE:
        return RtcpByePacket.parse_body(count, body)
    return RtcpUnknownPacket(packet_type, count, body)


def _strip_padding(body: bytes) -> bytes:
    if not body or body[-1] == 0 or body[-1] > len(body):
        raise RtcpError("RTCP padding count is 0 or exceeds the packet")
    return body[: -body[-1]]


def _pack_packet(packet_type: int, count: int, body: bytes) -> bytes:
    if count > RTCP_MAX_COUNT:
        raise RtcpError(f"RTCP packet type {packet_type} cannot carry {count} items (at most 31)")
    if len(body) % 4:
        raise RtcpError(f"RTCP packet type {packet_type} body is not a multiple of 4 bytes")
    header = _HEADER.pack((RTCP_VERSION << 6) | count, packet_type, len(body) // 4)
    return header + body


def _parse_reports(body: bytes, offset: int, count: int) -> list[RtcpReportBlock]:
    return [RtcpReportBlock.parse(body, offset + i * REPORT_BLOCK_LENGTH) for i in range(count)]


def _pack_reports(reports: list[RtcpReportBlock]) -> bytes:
    return b"".join(bytes(report) for report in reports)


def _parse_sdes_chunk(body: bytes, offset: int) -> tuple[int, RtcpSdesChunk]:
    if len(body) - offset < 4:
        raise RtcpError("RTCP SDES chunk is truncated in its SSRC")
    (ssrc,) = _SSRC.unpack_from(body, offset)
    offset += 4
    items: list[tuple[int, bytes]] = []
    while True:
        if offset >= len(body):
            raise RtcpError("RTCP SDES chunk has no terminating null item")
        item_type = body[offset]
        if item_type == SDES_END:
            # Skip the terminator and the padding to the next 32-bit boundary.
            return (offset + 4) & ~3, RtcpSdesChunk(ssrc, items)
        if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
            raise RtcpError(f"RTCP SDES item type {item_type} is truncated")
        length = body[offset + 1]
        items.append((item_type, body[offset + 2 : offset + 2 + length]))
        offset += 2 + length


# ---------------------------------------------------------------------------------------------------------
# Receiver statistics (RFC 3550 appendices A.1, A.3, A.8)

MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100


class RtpStats:
    """Receiver-side accumulator for one source: loss (RFC 3550 A.3) and interarrival jitter (A.8).

    Sequence tracking follows A.1 without the probation period: the first packet initialises the
    source, a jump larger than MAX_DROPOUT is accepted only when the next packet confirms it.
    """

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.received = 0
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self._bad_seq: int | None = None
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: float | None = None
        self._jitter = 0.0
        self._last_sr: int = 0
        self._last_sr_arrival: float | None = None

    @property
    def started(self) -> bool:
        return self.received > 0

    @property
    def extended_max_seq(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max_seq - self.base_seq + 1 if self.received else 0

    @property
    def cumulative_lost(self) -> int:
        """Expected minus received, clamped to 24 signed bits (RFC 3550 section 6.4.1)."""
        return max(PACKETS_LOST_MIN, min(PACKETS_LOST_MAX, self.expected - self.received))

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units (RFC 3550 A.8)."""
        return int(self._jitter)

    def update(self, sequence_number: int, rtp_timestamp: int, arrival_time: float) -> None:
        """Account one received packet; `arrival_time` in seconds on any monotonic clock."""
        if not self.received:
            self._init_sequence(sequence_number)
        elif not self._update_sequence(sequence_number):
            return
        self.received += 1
        # Interarrival jitter (A.8), here rather than in a method of its own: it runs for every packet.
        transit = arrival_time * self.clock_rate - rtp_timestamp
        last = self._transit
        if last is not None:
            # The RTP timestamp wraps at 2**32: fold the difference back into a signed range.
            d = (transit - last + 2**31) % 2**32 - 2**31
            self._jitter += (abs(d) - self._jitter) / 16
        self._transit = transit

    def on_sender_report(self, ntp_timestamp: int, arrival_time: float) -> None:
        """Remember the last SR from this source, for LSR and DLSR."""
        self._last_sr = ntp_middle32(ntp_timestamp)
        self._last_sr_arrival = arrival_time

    def report_block(self, ssrc: int, now: float) -> RtcpReportBlock:
        """Build a report block and start a new reporting interval (RFC 3550 A.3)."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        lost_interval = expected_interval - (self.received - self._received_prior)
        self._expected_prior = expected
        self._received_prior = self.received
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = 0 if self._last_sr_arrival is None else seconds_to_dlsr(now - self._last_sr_arrival)
        return RtcpReportBlock(
            ssrc=ssrc,
            fraction_lost=fraction,
            packets_lost=self.cumulative_lost,
            highest_sequence=self.extended_max_seq & 0xFFFFFFFF,
            jitter=self.jitter,
            lsr=self._last_sr,
            dlsr=dlsr,
        )

    def _init_sequence(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.cycles = 0
        self._bad_seq = None
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0

    def _update_sequence(self, seq: int) -> bool:
        """A.1's update_seq: False when the packet is discarded as a likely stray."""
        delta = (seq - self.max_seq) & 0xFFFF
        if delta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += 1 << 16
            self.max_seq = seq
        elif delta <= 0x10000 - MAX_MISORDER:
            if seq != self._bad_seq:
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
            # Two sequential packets after a big jump: the source restarted its sequence.
            self._init_sequence(seq)
            self._transit = None
        # else: duplicate or reordered packet within MAX_MISORDER, counted as received
        return True
