"""The sending half of a leg: the agent's audio, RFC 4733 events or silence, one packet per tick.

Each tick begins with ``tick_tx``, which sends the packet prepared at the end of the tick before, and
ends with ``prepare_tx``, which builds and SRTP-protects the next one (RFC 3711 section 3.3). The RTP
clock runs with the ticks whatever is sent, so SSRC, sequence number and timestamp stay continuous
across turns, DTMF and silence (RFC 3550 section 5.1).
"""

from __future__ import annotations

import secrets
import struct
import time
from collections import deque
from typing import Final, Protocol

import numpy as np

from activecall.media.dtmf import DtmfError, DtmfPacket, DtmfSender, digit_to_event
from activecall.media.g711 import PCMU, G711Codec
from activecall.media.metrics import STATS
from activecall.media.playout import FRAME_SAMPLES, Playout
from activecall.media.reports import RtcpReports
from activecall.media.srtp import SrtpSession
from activecall.messages import Message, PlaybackStarted

FRAME_MS: Final = 20
CLOCK_RATE: Final = 8000
DTMF_GAP_TICKS: Final = 3  # 60 ms of audio between two digits sent in a row
_RTP_HEADER: Final = struct.Struct("!BBHII")

Address = tuple[str, int]


class Datagrams(Protocol):
    """Where packets leave (the leg's RTP socket)."""

    def sendto(self, data: bytes, addr: Address, /) -> None: ...


class AgentListener(Protocol):
    """What the sender tells its leg."""

    def agent_event(self, message: Message) -> None:
        """A playout event (finished, paused, resumed, cut, cancelled), for the bus."""

    def playback_started(self, message: PlaybackStarted) -> None:
        """A turn's first packet has just left."""


class _Unheard:
    """The listener of a sender nobody listens to (alone in a test, or closed)."""

    def agent_event(self, message: Message) -> None:
        pass

    def playback_started(self, message: PlaybackStarted) -> None:
        pass


UNHEARD: Final = _Unheard()


class LegSender:
    """RTP out: playout, pacing, the packet prepared a tick ahead, SRTP protect and DTMF out.

    Nothing leaves until ``sending`` is set and a ``destination`` and ``transport`` are known; the
    RTP clock moves on regardless. The SSRC is the one the RTCP reports announce."""

    def __init__(
        self, *, reports: RtcpReports, srtp: bool = False, listener: AgentListener = UNHEARD
    ) -> None:
        self.reports = reports
        self.srtp = srtp
        self.listener = listener
        self.session: SrtpSession | None = None
        self.transport: Datagrams | None = None
        self.destination: Address | None = None
        self.sending = False
        # RFC 3550 section 5.1: random initial sequence number and timestamp.
        self.ssrc = reports.ssrc
        self.seq = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self.codec: G711Codec = PCMU
        self.payload_type = PCMU.payload_type
        self.te_payload_type: int | None = None
        self._silence = PCMU.silence(FRAME_SAMPLES)
        self._first_packet = True
        self._last_send = 0.0
        self.playout = Playout(self._playout_event)
        self.agent_frame: np.ndarray | None = None  # the agent's frame of this tick, for the recording
        # The packet prepared for the next tick, protected, and what goes with it.
        self._next_packet: bytes | None = None
        self._next_octets = 0
        self._next_agent_frame: np.ndarray | None = None
        self._started: PlaybackStarted | None = None  # announced when its turn's first packet leaves
        self.dtmf = DtmfSender(CLOCK_RATE, FRAME_MS)
        self._dtmf_digits: deque[tuple[str, int]] = deque()
        self._dtmf_packets: deque[DtmfPacket] = deque()
        self._dtmf_gap = 0

    def configure(self, codec: G711Codec, payload_type: int, te_payload_type: int | None) -> None:
        """The formats the peer accepts (RFC 3264)."""
        if (codec, payload_type, te_payload_type) != (self.codec, self.payload_type, self.te_payload_type):
            # Prepared in the format the peer has just left: its sequence number goes unused, which the
            # peer counts as one lost packet.
            self._next_packet = None
        self.codec = codec
        self.payload_type = payload_type
        self.te_payload_type = te_payload_type
        self._silence = codec.silence(FRAME_SAMPLES)

    # ------------------------------------------------------------------ per tick

    def tick_tx(self) -> None:
        """Send the packet prepared for this tick.

        The packet was built and SRTP-protected at the end of the tick before, so a tick begins with
        one ``sendto`` per leg: the last leg's packet leaves soon after the first, and that spread,
        and how much it varies from tick to tick, is what the peers see as send jitter."""
        data = self._next_packet
        self.agent_frame = self._next_agent_frame
        self._next_agent_frame = None
        dest = self.destination
        transport = self.transport
        if data is not None and dest is not None and transport is not None and self.sending:
            self._next_packet = None
            transport.sendto(data, dest)
            reports = self.reports
            reports.sent_packets += 1
            reports.sent_octets += self._next_octets
            reports.sent_since_report = True
            stats = STATS
            stats.packets_out += 1
            stats.bytes_out += len(data)
            now = time.monotonic()
            if self._last_send:
                stats.send_jitter.observe(abs(now - self._last_send - FRAME_MS / 1000))
            self._last_send = now
        started = self._started
        if started is not None:
            self._started = None
            self.listener.playback_started(started)

    def prepare_tx(self) -> None:
        """Build and protect the next tick's packet (a DTMF event packet, agent audio, or silence) and
        move the RTP clock on. It runs at the end of a tick, after the caller's audio, so a barge-in
        has already stopped the agent audio it would carry. Agent audio that arrives later waits for
        the next prepare: a turn starts at most one tick later than it would if it were built as sent.
        """
        self._next_packet = self._next_agent_frame = None
        if (self._dtmf_packets or self._dtmf_digits) and self._prepare_dtmf():
            self._advance()
            return
        pcm = self.playout.next_frame()
        if self.sending:
            if pcm is None:
                self._prepare(self.payload_type, self._first_packet, self.timestamp, self._silence)
            else:
                frame = np.frombuffer(pcm, dtype="<i2")
                self._next_agent_frame = frame
                marker = self.playout.marker or self._first_packet
                self._prepare(self.payload_type, marker, self.timestamp, self.codec.encode(frame))
        elif pcm is not None:
            self._next_agent_frame = np.frombuffer(pcm, dtype="<i2")
        self.timestamp = (self.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF  # _advance() without the call

    def _advance(self) -> None:
        self.timestamp = (self.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF

    def skip(self, ticks: int) -> None:
        """The pacer dropped ticks after a stall: move the clock on as if silence had been sent. The
        packet prepared before the stall goes out with its own timestamp, as a late packet would."""
        self.timestamp = (self.timestamp + ticks * FRAME_SAMPLES) & 0xFFFFFFFF

    def _prepare(self, pt: int, marker: bool, timestamp: int, payload: bytes) -> None:
        data = _RTP_HEADER.pack(0x80, (0x80 | pt) if marker else pt, self.seq, timestamp, self.ssrc) + payload
        session = self.session
        if session is not None:
            data = session.protect(data)
        elif self.srtp:
            return  # no remote key yet: nothing may leave in the clear
        self.seq = (self.seq + 1) & 0xFFFF
        self._first_packet = False
        self._next_packet = data
        self._next_octets = len(payload)

    # ------------------------------------------------------------------ DTMF out (RFC 4733)

    def send_dtmf(self, digits: str, duration_ms: int) -> None:
        """Queue telephone events; DtmfError when none was negotiated or a digit has no event."""
        if self.te_payload_type is None:
            raise DtmfError("the peer did not negotiate telephone-event")
        for digit in digits:
            digit_to_event(digit)
        self._dtmf_digits.extend((digit, duration_ms) for digit in digits)

    def _prepare_dtmf(self) -> bool:
        """Prepare the next DTMF packet if one is due; False leaves the tick to audio."""
        if not self._dtmf_packets:
            if self._dtmf_gap:
                self._dtmf_gap -= 1
                return False
            digit, duration_ms = self._dtmf_digits.popleft()
            self._dtmf_packets.extend(self.dtmf.packets(digit, duration_ms, self.timestamp))
            STATS.dtmf_out += 1
        packet = self._dtmf_packets.popleft()
        te = self.te_payload_type
        if self.sending and te is not None:
            self._prepare(te, packet.marker, packet.timestamp, packet.payload)
        if not self._dtmf_packets:
            self._dtmf_gap = DTMF_GAP_TICKS
        return True

    # ------------------------------------------------------------------ events

    def _playout_event(self, message: Message) -> None:
        if type(message) is PlaybackStarted:
            # The playout takes a turn's first frame in prepare_tx, a tick before it is sent.
            self._started = message
            return
        self.listener.agent_event(message)

    def close(self) -> None:
        """Nothing leaves any more; the playout's events and the listener lead nowhere."""
        self.transport = None
        self.sending = False
        self.listener = UNHEARD
        # The playout's emit leads back here: without this a closed sender waits in a reference cycle
        # for a full collection rather than being freed by reference counting.
        self.playout.emit = _ignore


def _ignore(message: Message) -> None:
    """What a closed sender's playout emits to."""
