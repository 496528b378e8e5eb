"""DTMF as RTP telephone events (RFC 4733): payload, a receiver that reports each digit once, a sender."""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

from activecall.media.rtp import RtpPacket, timestamp_delta

TELEPHONE_EVENT_LENGTH: Final = 4
DTMF_DIGITS: Final = "0123456789*#ABCD"  # RFC 4733 section 3.2, events 0-15
MAX_VOLUME: Final = 63
MAX_DURATION: Final = 0xFFFF
DEFAULT_VOLUME: Final = 10  # -10 dBm0, a typical DTMF level
END_PACKET_REPEATS: Final = 3  # RFC 4733 section 2.5.1.4

_PAYLOAD: Final = struct.Struct("!BBH")


class DtmfError(ValueError):
    """Malformed telephone-event payload, or a digit that has no event code."""


def event_to_digit(event: int) -> str | None:
    """The DTMF digit of an event code, or None for events that are not digits (RFC 4733 3.2)."""
    return DTMF_DIGITS[event] if 0 <= event < len(DTMF_DIGITS) else None


def digit_to_event(digit: str) -> int:
    index = DTMF_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)")
    return index


@dataclass
class TelephoneEvent:
    """The telephone-event payload (RFC 4733 section 2.3).

    `duration` is in RTP timestamp units since the event's timestamp; `volume` is the power level in
    -dBm0 (0..63). The reserved bit is written as zero and ignored on parse.
    """

    event: int
    end: bool = False
    volume: int = DEFAULT_VOLUME
    duration: int = 0

    @property
    def digit(self) -> str | None:
        return event_to_digit(self.event)

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        """Parse the first event of a payload; bytes after it (none in practice) are ignored."""
        if len(data) < TELEPHONE_EVENT_LENGTH:
            raise DtmfError(f"telephone-event payload of {len(data)} bytes is shorter than 4")
        event, flags, duration = _PAYLOAD.unpack_from(data)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def __bytes__(self) -> bytes:
        if not 0 <= self.event <= 255 or not 0 <= self.volume <= MAX_VOLUME:
            raise DtmfError(f"event {self.event} / volume {self.volume} do not fit the payload")
        if not 0 <= self.duration <= MAX_DURATION:
            raise DtmfError(f"duration {self.duration} does not fit 16 bits")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True)
class DtmfDigit:
    """A digit recognised from telephone events.

    `timestamp` is the RTP timestamp of the event start, `duration` its length in timestamp units;
    `ended` is False when no end packet arrived and the digit was reported by timeout or by the
    start of the next event.
    """

    digit: str
    timestamp: int
    duration: int
    ended: bool


@dataclass
class _PendingEvent:
    event: int
    timestamp: int
    segment_timestamp: int
    earlier_segments: int  # duration of completed long-event segments
    duration: int
    last_seen: float

    def to_digit(self, *, ended: bool) -> DtmfDigit:
        digit = event_to_digit(self.event)
        assert digit is not None
        return DtmfDigit(digit, self.timestamp, self.earlier_segments + self.duration, ended)


class DtmfReceiver:
    """Turns telephone-event packets into digits, each reported exactly once (RFC 4733 section 2.5.2).

    Events are told apart by RTP timestamp, never by the marker bit (some carriers omit it). A digit is
    reported on its first end packet; the retransmitted end packets and any late packet carrying the
    same timestamp are dropped. When the end packets are lost, the digit is reported when the next event
    starts or, failing that, by `flush(now)` once `timeout` seconds passed without a packet. A lost start
    packet is harmless: any packet of the event opens it.
    """

    def __init__(self, timeout: float = 0.3, history: int = 16) -> None:
        self.timeout = timeout
        self._pending: _PendingEvent | None = None
        self._finished: deque[int] = deque(maxlen=history)

    def receive_packet(self, packet: RtpPacket, now: float) -> list[DtmfDigit]:
        """Feed one RTP packet whose payload type is telephone-event."""
        return self.receive(TelephoneEvent.parse(packet.payload), packet.timestamp, now)

    def receive(self, event: TelephoneEvent, timestamp: int, now: float) -> list[DtmfDigit]:
        """Feed one event with its RTP timestamp; returns the digits completed by it (0, 1 or 2)."""
        if event.digit is None or timestamp in self._finished:
            return []
        digits = []
        pending = self._pending
        if pending is not None and timestamp != pending.segment_timestamp:
            if self._continues_long_event(pending, event, timestamp):
                pending.earlier_segments += pending.duration
                pending.segment_timestamp = timestamp
                pending.duration = 0
            else:
                digits.append(self._finish(ended=False))
                pending = None
        if pending is None:
            pending = self._pending = _PendingEvent(event.event, timestamp, timestamp, 0, 0, now)
        pending.duration = max(pending.duration, event.duration)
        pending.last_seen = now
        if event.end:
            digits.append(self._finish(ended=True))
        return digits

    def flush(self, now: float) -> list[DtmfDigit]:
        """Report the pending digit if its last packet is older than `timeout` (its end was lost)."""
        if self._pending is None or now - self._pending.last_seen < self.timeout:
            return []
        return [self._finish(ended=False)]

    def close(self) -> list[DtmfDigit]:
        """Report the pending digit, if any, whatever its age (the stream is ending)."""
        return [] if self._pending is None else [self._finish(ended=False)]

    def _finish(self, *, ended: bool) -> DtmfDigit:
        pending = self._pending
        assert pending is not None
        self._pending = None
        self._finished.append(pending.timestamp)
        if pending.segment_timestamp != pending.timestamp:
            self._finished.append(pending.segment_timestamp)
        return pending.to_digit(ended=ended)

    @staticmethod
    def _continues_long_event(pending: _PendingEvent, event: TelephoneEvent, timestamp: int) -> bool:
        """RFC 4733 section 2.5.1.3: an event longer than the 16-bit duration goes on in a new segment
        whose timestamp is the previous one plus the previous segment's duration."""
        return (
            event.event == pending.event
            and pending.duration == MAX_DURATION
            and 0 < timestamp_delta(timestamp, pending.segment_timestamp) <= MAX_DURATION
        )


@dataclass(frozen=True)
class DtmfPacket:
    """One telephone-event packet to send: payload, RTP timestamp and marker; `offset_ms` is when to
    send it relative to the first packet. The caller assigns consecutive sequence numbers."""

    payload: bytes
    timestamp: int
    marker: bool
    offset_ms: int


class DtmfSender:
    """Builds the packet sequence of one digit (RFC 4733 section 2.5.1).

    The first packet carries the marker; one packet per interval reports the duration so far; the
    final duration goes out in END_PACKET_REPEATS end packets with identical timestamp and duration.
    """

    def __init__(self, clock_rate: int = 8000, interval_ms: int = 20, volume: int = DEFAULT_VOLUME) -> None:
        self.clock_rate = clock_rate
        self.interval_ms = interval_ms
        self.volume = volume

    def packets(self, digit: str, duration_ms: int, timestamp: int) -> list[DtmfPacket]:
        """Packets for `digit` lasting `duration_ms`, starting at RTP `timestamp`."""
        event = digit_to_event(digit)
        duration = duration_ms * self.clock_rate // 1000
        if not 0 < duration <= MAX_DURATION:
            raise DtmfError(f"DTMF duration of {duration_ms} ms does not fit one event segment")
        step = self.interval_ms * self.clock_rate // 1000
        durations = list(range(step, duration, step))
        updates = [TelephoneEvent(event, False, self.volume, d) for d in durations]
        ends = [TelephoneEvent(event, True, self.volume, duration)] * END_PACKET_REPEATS
        return [
            DtmfPacket(bytes(telephone_event), timestamp, index == 0, index * self.interval_ms)
            for index, telephone_event in enumerate(updates + ends)
        ]
