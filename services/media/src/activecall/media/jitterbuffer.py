"""Adaptive jitter buffer for constant-ptime audio (one RTP packet = one frame).

Model: the packet with extended sequence number `i` is due at `P + i * frame`, where P is the schedule
offset. Its transit `arrival - i * frame`, less the smallest transit of the recent window (the fastest
path), is the queueing delay it met. The buffer's current delay is `P - base`, so a packet is on time
when its queueing delay does not exceed the current delay. The target delay is a high quantile of the
queueing delays in the window (a rare outlier is allowed to be late rather than to raise the latency
of the whole call), clamped to [min_delay, max_delay]. The schedule moves toward the target one frame
at a time: it waits (conceals without advancing) for a missing packet while below target, and drops a
buffered frame (at most one per DROP_SPACING_FRAMES) while more than one frame above it. A late
packet that finds the buffer empty after a run of concealed slots means the stream got later, not
lossy: the schedule steps back to play it.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from activecall.media.rtp import RtpPacket, seq_delta

MAX_DROPOUT: Final = 3000  # RFC 3550 A.1: a forward jump this large means a new sequence
MAX_MISORDER: Final = 100  # ... and so does a backward jump this large
DEFAULT_REPEAT_GAINS: Final = (0.7, 0.49, 0.343)  # about -3 dB per repeated frame, then silence
_HISTORY_BITS: Final = 64
_HISTORY_MASK: Final = (1 << _HISTORY_BITS) - 1
DROP_SPACING_FRAMES: Final = 5  # spread the frames dropped to cut the delay, one per 100 ms at most
_EPSILON: Final = 1e-6  # seconds: keeps float noise from flipping delay comparisons at the boundary


@dataclass(frozen=True)
class Concealment:
    """A frame slot with nothing to play.

    `count` is the number of consecutive concealed frames so far (1 for the first). `gain` tells the
    consumer what to play: the last good frame scaled by `gain`, or silence when `gain` is 0.
    """

    sequence_number: int
    count: int
    gain: float


Samples = npt.NDArray[np.int16]


def conceal_pcm16(last_frame: Samples | None, marker: Concealment, samples: int) -> Samples:
    """The PCM frame to play for a concealment marker: the attenuated last frame, or silence."""
    if last_frame is None or marker.gain <= 0.0:
        return np.zeros(samples, dtype=np.int16)
    return (last_frame.astype(np.float32) * marker.gain).astype(np.int16)


class JitterBuffer:
    """Reorders RTP packets and releases one frame per `frame_ms` of the caller's clock.

    `put(packet, arrival_time)` for every received packet, `get(now)` on every pacing tick: it returns
    the packet due, a `Concealment` for a missing one, or None when nothing is due yet (call it again
    until None to catch up after a stall). Times are seconds on one monotonic clock.

    Counters: `received` (packets accepted for playout), `late` (arrived after their slot was
    played or concealed, or set aside as the first packet of an unconfirmed sequence jump), `lost`
    (slots concealed because the packet was missing, net of the late arrivals for them),
    `duplicates`, `concealed` (markers returned), `dropped` (accepted packets discarded to cut the
    delay or on a reset), `resets` (the schedule restarted after a sequence jump or a pause longer
    than the maximum delay).
    """

    def __init__(
        self,
        *,
        frame_ms: int = 20,
        min_delay_ms: int = 40,
        max_delay_ms: int = 200,
        quantile: float = 0.98,
        window_packets: int = 150,
        repeat_gains: tuple[float, ...] = DEFAULT_REPEAT_GAINS,
    ) -> None:
        assert 0 < min_delay_ms <= max_delay_ms
        self.frame = frame_ms / 1000
        self.min_delay = min_delay_ms / 1000
        self.max_delay = max_delay_ms / 1000
        self.quantile = quantile
        self.repeat_gains = repeat_gains
        self._window_packets = window_packets
        self.received = self.late = self.lost = self.duplicates = 0
        self.concealed = self.dropped = self.resets = 0
        self.target_delay = self.min_delay
        self._buffer: dict[int, RtpPacket] = {}
        self._next: int | None = None  # extended sequence number of the next slot to play
        self._next_due = 0.0
        self._history = 0  # bit k set: slot (_next - 1 - k) was received
        self._history_len = 0  # how many of those bits describe slots of the current schedule
        self._missing_run = 0
        self._conceal_run = 0
        self._played_any = False
        self._priming = False
        self._frames_since_drop = DROP_SPACING_FRAMES
        self._jump_candidate: int | None = None
        self._transits: deque[float] = deque()  # the window, in arrival order
        self._sorted_transits: list[float] = []  # the same values, sorted
        self._last_transit: float | None = None
        self._jitter = 0.0

    # -- observed state ---------------------------------------------------------------------------------

    @property
    def jitter(self) -> float:
        """Interarrival jitter in seconds (RFC 3550 A.8, arrival time against sequence number)."""
        return self._jitter

    @property
    def delay(self) -> float:
        """Current playout delay over the fastest recent packet, in seconds."""
        if self._next is None:
            return self.target_delay
        return self._next_due - self._next * self.frame - self._sorted_transits[0]

    @property
    def buffered(self) -> int:
        """Packets waiting for their slot."""
        return len(self._buffer)

    # -- input --------------------------------------------------------------------------------------------

    def put(self, packet: RtpPacket, arrival_time: float) -> None:
        """Accept one packet received at `arrival_time`."""
        if self._next is None:
            self._start(packet, packet.sequence_number, arrival_time)
            return
        index = self._next + seq_delta(packet.sequence_number, self._next & 0xFFFF)
        offset = index - self._next
        if offset >= MAX_DROPOUT or offset < -MAX_MISORDER:
            self._on_jump(packet, arrival_time)
        elif offset < 0:
            self._on_past(packet, index, arrival_time)
        elif index in self._buffer:
            self.duplicates += 1
        else:  # _accept, inlined on the per-packet path
            self.received += 1
            self._buffer[index] = packet
            self._observe(index, arrival_time)

    def _start(self, packet: RtpPacket, index: int, arrival_time: float) -> None:
        """Open the schedule: the first packet plays after the target delay."""
        self._next = index
        self._next_due = arrival_time + self.target_delay
        self._accept(packet, index, arrival_time)

    def _restart(self, packet: RtpPacket, index: int, arrival_time: float) -> None:
        """Start over from `packet`, keeping the tick grid: the slots until the delay has built up
        again are concealed rather than left empty."""
        self.resets += 1
        self.dropped += len(self._buffer)
        self._buffer.clear()
        self._transits.clear()
        self._sorted_transits.clear()
        self._last_transit = None
        self._next = index
        self._history = self._history_len = 0
        self._missing_run = 0
        self._jump_candidate = None
        self._priming = True
        self._accept(packet, index, arrival_time)

    def _accept(self, packet: RtpPacket, index: int, arrival_time: float) -> None:
        self.received += 1
        self._buffer[index] = packet
        self._observe(index, arrival_time)

    def _on_jump(self, packet: RtpPacket, arrival_time: float) -> None:
        """RFC 3550 A.1: believe a sequence jump once the next packet confirms it."""
        if packet.sequence_number != self._jump_candidate:
            self._jump_candidate = (packet.sequence_number + 1) & 0xFFFF
            self.late += 1
            return
        self._restart(packet, packet.sequence_number, arrival_time)

    def _on_past(self, packet: RtpPacket, index: int, arrival_time: float) -> None:
        """A packet whose slot was already played or concealed."""
        assert self._next is not None
        age = self._next - index
        known = age <= self._history_len
        if known and self._history >> (age - 1) & 1:
            self.duplicates += 1
        elif not self._buffer and age <= self._missing_run:
            # Starving, and every slot since this packet was concealed: the stream got later, not lossy.
            too_late = self.delay + age * self.frame > self.max_delay + _EPSILON
            self._rewind(age)
            if too_late:
                self._restart(packet, index, arrival_time)
            else:
                self._accept(packet, index, arrival_time)
        else:
            self.late += 1
            if known:
                self._history |= 1 << (age - 1)
                self.lost -= 1
            self._observe(index, arrival_time)

    def _rewind(self, slots: int) -> None:
        """Move the next slot back so that concealed slots play after all: the delay grows."""
        assert self._next is not None
        self._next -= slots
        self._history >>= slots
        self._history_len = max(0, self._history_len - slots)
        self._missing_run -= slots
        self.lost -= slots

    def _observe(self, index: int, arrival_time: float) -> None:
        """Update the transit window, the interarrival jitter and the target delay."""
        transit = arrival_time - index * self.frame
        transits, ordered = self._transits, self._sorted_transits
        transits.append(transit)
        insort(ordered, transit)
        if len(transits) > self._window_packets:
            del ordered[bisect_left(ordered, transits.popleft())]
        last = self._last_transit
        if last is not None:
            self._jitter += (abs(transit - last) - self._jitter) / 16
        self._last_transit = transit
        queueing = ordered[int(self.quantile * (len(ordered) - 1))] - ordered[0]
        # min(max_delay, max(min_delay, queueing)) without two calls: this runs for every packet.
        target = queueing if queueing > self.min_delay else self.min_delay
        self.target_delay = target if target < self.max_delay else self.max_delay

    # -- output -------------------------------------------------------------------------------------------

    def get(self, now: float) -> RtpPacket | Concealment | None:
        """The frame due at `now`: a packet, a concealment marker, or None if none is due yet."""
        if self._next is None or now < self._next_due:
            return None
        packet = self._buffer.get(self._next)
        below_target = self.delay < self.target_delay - _EPSILON
        result: RtpPacket | Concealment
        if packet is not None and not (self._priming and below_target):
            del self._buffer[self._next]
            result = self._play(packet)
        elif packet is not None or below_target:
            result = self._conceal(self._next)  # wait a frame: the delay grows, nothing is skipped
        else:
            self.lost += 1
            self._missing_run += 1
            self._advance(received=False)
            result = self._conceal(self._next - 1)
        self._next_due += self.frame
        return result

    def _play(self, packet: RtpPacket) -> RtpPacket:
        assert self._next is not None
        following = self._buffer.get(self._next + 1)
        self._frames_since_drop += 1
        if (
            following is not None
            and self._frames_since_drop > DROP_SPACING_FRAMES
            and self.delay > self.target_delay + self.frame + _EPSILON
        ):
            self._frames_since_drop = 0
            self.dropped += 1
            self._advance(received=True)
            del self._buffer[self._next]
            packet = following
        self._advance(received=True)
        self._missing_run = 0
        self._conceal_run = 0
        self._played_any = True
        self._priming = False
        return packet

    def _advance(self, *, received: bool) -> None:
        assert self._next is not None
        self._next += 1
        self._history = ((self._history << 1) | received) & _HISTORY_MASK
        self._history_len = min(_HISTORY_BITS, self._history_len + 1)

    def _conceal(self, index: int) -> Concealment:
        self.concealed += 1
        self._conceal_run += 1
        count = self._conceal_run
        repeat = self._played_any and count <= len(self.repeat_gains)
        return Concealment(index & 0xFFFF, count, self.repeat_gains[count - 1] if repeat else 0.0)
