"""One RTP leg: its sockets, SRTP, symmetric latching, the caller's audio in and the agent's out.

Datagrams arrive through :class:`RtpProtocol` and go straight into the jitter buffer; all other work
runs on the worker's pacing ticks: ``tick_tx`` sends one packet (agent audio, DTMF, or silence);
``due_slots``, then one ``decode_slots`` for all the worker's legs, then ``play_slots`` play the
jitter buffer out into frames (decode, VAD, barge-in, ``audio:in``), so G.711 costs one table lookup
per tick instead of a few numpy calls per frame; ``tick_slow`` (a few times a second) sends RTCP and
notices an RTP timeout.

The RTP clock runs with the ticks whatever is sent, so SSRC, sequence number and timestamp stay
continuous across turns, DTMF and silence (RFC 3550 section 5.1).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

import numpy as np

from activecall.config import MediaSettings
from activecall.media.bargein import BargeInDetector, CallerActivity
from activecall.media.dtmf import DtmfError, DtmfPacket, DtmfReceiver, DtmfSender, digit_to_event
from activecall.media.g711 import CODECS_BY_NAME, CODECS_BY_PAYLOAD_TYPE, PCMU, G711Codec
from activecall.media.jitterbuffer import Concealment, JitterBuffer, conceal_pcm16
from activecall.media.metrics import STATS, TURN_LATENCY
from activecall.media.playout import FRAME_SAMPLES, Playout
from activecall.media.ports import BoundPair
from activecall.media.recorder import StereoRecorder
from activecall.media.reports import RtcpReports
from activecall.media.rtcp import RtcpError, parse_compound
from activecall.media.rtp import RtpError, RtpPacket, is_rtcp
from activecall.media.srtp import (
    SrtpAuthError,
    SrtpError,
    SrtpKeyError,
    SrtpProfile,
    SrtpReplayError,
    SrtpSession,
    generate_key_salt,
    parse_sdes_inline,
)
from activecall.media.vad import Frame, SpeechDetector, SpeechStarted, Vad
from activecall.messages import (
    CallError,
    DtmfReceived,
    LegUpdate,
    MediaTimeout,
    Message,
    PlaybackStarted,
    SpeechStopped,
)
from activecall.messages import SpeechStarted as SpeechStartedEvent

log = logging.getLogger("activecall.media.leg")

FRAME_MS: Final = 20
CLOCK_RATE: Final = 8000
RELATCH_PACKETS: Final = 3  # plain RTP from a new source must arrive this often in a row to be followed
MAX_FRAMES_PER_TICK: Final = 8
DTMF_GAP_TICKS: Final = 3  # 60 ms of audio between two digits sent in a row
DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")
_RTP_HEADER: Final = struct.Struct("!BBHII")
_SILENCE_PCM: Final = np.zeros(FRAME_SAMPLES, dtype=np.int16)
_VAD_FRAME_BYTES: Final = frozenset((160, 320, 480))  # 10, 20 and 30 ms of PCM16 at 8 kHz

Address = tuple[str, int]
Slot = RtpPacket | Concealment | bytes  # bytes: an audio packet decoded to PCM16


class LegError(ValueError):
    """A leg.update the leg cannot apply (codec, direction, crypto)."""


class LegSink(Protocol):
    """Where a leg's frames and events go (the worker's bus writer)."""

    def event(self, call_id: str, message: Message) -> None: ...

    def frame(self, call_id: str, pcm: bytes, sample_rate: int, seq: int, at_ms: int) -> None: ...


def _nothing() -> None:
    """What a socket runs before each datagram when no pacer asks for anything."""


class _RememberingVad:
    """Passes frames to a detector and keeps its last decision for barge-in."""

    def __init__(self, inner: Vad) -> None:
        self.inner = inner
        self.last = False

    def is_speech(self, frame: Frame, sample_rate: int) -> bool:
        self.last = self.inner.is_speech(frame, sample_rate)
        return self.last


class RtpProtocol(asyncio.DatagramProtocol):
    """A leg's socket. ``before_packet`` runs ahead of each datagram: the worker's pacer runs a tick that
    fell due while a burst of datagrams was being taken in."""

    def __init__(self, leg: Leg, rtcp: bool = False, before_packet: Callable[[], None] = _nothing) -> None:
        self.leg = leg
        self.rtcp = rtcp
        self.before_packet = before_packet

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.before_packet()
        if self.rtcp:
            self.leg.on_rtcp(data, addr)
        else:
            self.leg.on_rtp(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that went away; the RTP timeout deals with it.
        log.debug("rtp socket error", extra={"leg": self.leg.leg_id, "error": str(exc)})


class Leg:
    """A call leg on this worker. ``update`` applies the remote SDP; ``close`` says goodbye."""

    def __init__(
        self,
        *,
        call_id: str,
        leg_id: str,
        ports: BoundPair,
        srtp: bool,
        rtcp_mux: bool,
        settings: MediaSettings,
        sink: LegSink,
        vad: Vad,
        cname: str,
        speech_stop_ms: int = 500,
    ) -> None:
        self.call_id = call_id
        self.leg_id = leg_id
        self.ports = ports
        self.srtp = srtp
        self.rtcp_mux = rtcp_mux
        self.settings = settings
        self.sink = sink
        self.local_key = generate_key_salt() if srtp else b""
        self.session: SrtpSession | None = None
        self._remote_key = b""
        self.rtp_transport: asyncio.DatagramTransport | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None
        # Sending side: the RTP clock (RFC 3550 section 5.1: random initial values).
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self.codec: G711Codec = PCMU
        self.payload_type = PCMU.payload_type
        self.te_payload_type: int | None = None
        self.ptime = FRAME_MS
        self.direction = "sendrecv"
        self.remote: Address | None = None
        self.latched: Address | None = None
        self.rtcp_remote: Address | None = None
        self.ready = False
        self.closed = False
        self._first_packet = True
        self._last_send = 0.0
        self._silence = PCMU.silence(FRAME_SAMPLES)
        self._agent_frame: np.ndarray | None = None  # the agent's frame of this tick, for the recording
        # The packet prepared for the next tick, protected (see tick_tx), and what goes with it.
        self._next_packet: bytes | None = None
        self._next_octets = 0
        self._next_agent_frame: np.ndarray | None = None
        self._started: PlaybackStarted | None = None  # announced when its turn's first packet leaves
        self.playout = Playout(self._emit)
        self._speech_ended: float | None = None
        self.dtmf_sender = DtmfSender(CLOCK_RATE, FRAME_MS)
        self._dtmf_digits: deque[tuple[str, int]] = deque()
        self._dtmf_packets: deque[DtmfPacket] = deque()
        self._dtmf_gap = 0
        # Receiving side.
        self.jitter = self._new_jitter_buffer()
        self.reports = RtcpReports(self.ssrc, cname, CLOCK_RATE)
        self.dtmf_receiver = DtmfReceiver()
        self._vad = _RememberingVad(vad)
        self.speech = SpeechDetector(
            self._vad,
            CLOCK_RATE,
            frame_ms=FRAME_MS,
            start_ms=max(FRAME_MS, settings.barge_in_min_speech_ms),
            stop_ms=speech_stop_ms,
        )
        self.barge_in = BargeInDetector(settings.barge_in_guard_ms, settings.barge_in_min_speech_ms, FRAME_MS)
        self.barge_in_enabled = True
        self.activity = CallerActivity()
        self._paused_at = 0.0  # when caller speech paused the playing turn
        self.recorder: StereoRecorder | None = None
        self._last_pcm: bytes | None = None  # PCM16 of the last frame played, for concealment
        self._frames_out = 0
        self._batch: list[bytes] = []
        self._candidate: Address | None = None
        self._candidate_count = 0
        self.last_rx = time.monotonic()
        self.timed_out = False
        self._synced_late = 0
        self._synced_lost = 0

    # ------------------------------------------------------------------ setup

    @property
    def port(self) -> int:
        return self.ports.rtp_port

    @property
    def sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receiving(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")

    def _new_jitter_buffer(self) -> JitterBuffer:
        s = self.settings
        low = max(self.ptime, s.jitter_min_ms)
        return JitterBuffer(frame_ms=self.ptime, min_delay_ms=low, max_delay_ms=max(low, s.jitter_max_ms))

    def update(self, msg: LegUpdate) -> None:
        """Apply the remote description (RFC 3264): address, codec, DTMF, ptime, direction, SDES key."""
        codec = self._codec_of(msg)
        if msg.direction not in DIRECTIONS:
            raise LegError(f"unknown direction {msg.direction!r}")
        ptime = msg.ptime or FRAME_MS
        if ptime not in (10, 20, 30):
            raise LegError(f"ptime {msg.ptime} is not supported (10, 20 or 30 ms)")
        if self.srtp:
            self._update_crypto(msg.remote_crypto_suite, msg.remote_crypto_key)
        remote = (msg.remote_address, msg.remote_port) if msg.remote_address and msg.remote_port else None
        if remote != self.remote:
            self.remote = remote
            self.latched = None  # a new address in the SDP: follow it until the peer's packets say otherwise
            self.rtcp_remote = None
        payload_type = msg.payload_type if msg.payload_type else codec.payload_type
        te_payload_type = msg.telephone_event_pt or None
        if (codec, payload_type, te_payload_type) != (self.codec, self.payload_type, self.te_payload_type):
            # Prepared in the format the peer has just left: its sequence number goes unused, which the
            # peer counts as one lost packet.
            self._next_packet = None
        self.codec = codec
        self.payload_type = payload_type
        self._silence = codec.silence(FRAME_SAMPLES)
        self.te_payload_type = te_payload_type
        if ptime != self.ptime:  # the peer's packet size: the receive side's frame length follows it
            self.ptime = ptime
            self.jitter = self._new_jitter_buffer()
            self.speech.frame_ms = self.barge_in.frame_ms = ptime
        self.direction = msg.direction
        if not self.ready:
            self.last_rx = time.monotonic()
        self.ready = True

    def _codec_of(self, msg: LegUpdate) -> G711Codec:
        codec = CODECS_BY_NAME.get(msg.codec.upper()) if msg.codec else None
        if codec is None and not msg.codec:
            codec = CODECS_BY_PAYLOAD_TYPE.get(msg.payload_type)
        if codec is None:
            raise LegError(f"codec {msg.codec!r} is not supported (PCMU, PCMA)")
        return codec

    def _update_crypto(self, suite: str, key_params: str) -> None:
        if not suite or not key_params:
            raise LegError("the leg uses SRTP but the update carries no remote crypto")
        try:
            profile = SrtpProfile.from_suite(suite)
            remote_key = parse_sdes_inline(key_params)
        except SrtpKeyError as exc:
            raise LegError(str(exc)) from None
        session = self.session
        if session is not None and profile is session.profile:
            if remote_key != self._remote_key:  # the peer re-keyed; the outbound context goes on
                session.replace_remote_key(remote_key)
                self._remote_key = remote_key
            return  # the same key again (a re-INVITE): keep the replay and rollover state
        self.session = SrtpSession(profile, self.local_key, remote_key)
        self._remote_key = remote_key

    def attach(self, rtp: asyncio.DatagramTransport, rtcp: asyncio.DatagramTransport | None) -> None:
        self.rtp_transport = rtp
        self.rtcp_transport = rtcp

    # ------------------------------------------------------------------ receive path (per packet)

    def on_rtp(self, data: bytes, addr: Address) -> None:
        if self.rtcp_mux and is_rtcp(data):
            self.on_rtcp(data, addr)
            return
        stats = STATS
        if not self.ready:
            stats.dropped["not_ready"] += 1
            return
        size = len(data)
        session = self.session
        if session is not None:
            try:
                data = session.unprotect(data)
            except SrtpError as exc:
                stats.srtp_failures[_failure_kind(exc)] += 1
                return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            stats.dropped["malformed"] += 1
            return
        pt = packet.payload_type
        if pt != self.payload_type and pt != self.te_payload_type:
            stats.dropped["payload_type"] += 1
            return
        if addr != self.latched:
            if not self._latch(addr):
                stats.dropped["source"] += 1
                return
        elif self._candidate is not None:
            self._candidate = None  # the latched source spoke again: a move needs packets in a row
        now = time.monotonic()
        stats.packets_in += 1
        stats.bytes_in += size
        self.last_rx = now
        reports = self.reports
        reports.remote_ssrc = packet.ssrc
        reports.received.update(packet.sequence_number, packet.timestamp, now)
        if pt == self.te_payload_type:
            self._on_telephone_event(packet, now)
        self.jitter.put(packet, now)

    def _latch(self, addr: Address) -> bool:
        """Symmetric RTP: send where the peer's packets come from. An authenticated SRTP packet moves
        the latch at once; plain RTP must come from the new source RELATCH_PACKETS times in a row."""
        if self.latched is not None and self.session is None:
            if addr != self._candidate:
                self._candidate, self._candidate_count = addr, 0
            self._candidate_count += 1
            if self._candidate_count < RELATCH_PACKETS:
                return False
        if self.latched is not None:
            log.info("rtp source moved", extra={"leg": self.leg_id, "from": self.latched, "to": addr})
        self.latched = addr
        self._candidate, self._candidate_count = None, 0
        return True

    def _on_telephone_event(self, packet: RtpPacket, now: float) -> None:
        try:
            digits = self.dtmf_receiver.receive_packet(packet, now)
        except DtmfError:
            STATS.dropped["malformed"] += 1
            return
        for digit in digits:
            self._dtmf_received(digit.digit, digit.duration)

    def _dtmf_received(self, digit: str, duration: int) -> None:
        STATS.dtmf_in += 1
        self._speech_ended = time.monotonic()  # a key press is the caller's turn: the answer is timed from it
        # A key press is deliberate, so no guard time: it cuts a menu prompt at once, as callers expect.
        if self.barge_in_enabled and (self.playout.current is None or self.playout.current.interruptible):
            self.cut_for_caller()
        self._emit(DtmfReceived(digit=digit, duration_ms=duration * 1000 // CLOCK_RATE))

    def on_rtcp(self, data: bytes, addr: Address) -> None:
        session = self.session
        if session is not None:
            try:
                data = session.unprotect_rtcp(data)
            except SrtpError as exc:
                STATS.srtp_failures[_failure_kind(exc)] += 1
                return
        elif self.srtp:
            STATS.srtp_failures["nokey"] += 1
            return
        try:
            packets = parse_compound(data)
        except RtcpError:
            STATS.dropped["malformed"] += 1
            return
        STATS.rtcp_in += 1
        self.rtcp_remote = addr
        self.reports.on_compound(packets)

    # ------------------------------------------------------------------ send path (per tick)

    def destination(self) -> Address | None:
        return self.latched or self.remote

    def tick_tx(self) -> None:
        """Send the packet prepared for this tick.

        The packet was built and SRTP-protected at the end of the tick before, so a tick begins with
        one ``sendto`` per leg: the last leg's packet leaves soon after the first, and that spread,
        and how much it varies from tick to tick, is what the peers see as send jitter."""
        data = self._next_packet
        self._agent_frame = self._next_agent_frame
        self._next_agent_frame = None
        dest = self.latched or self.remote  # destination(), without a call per packet
        transport = self.rtp_transport
        if data is not None and dest is not None and transport is not None and self.ready and self.sending:
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
            self._announce_playback(started)

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
        if self.ready and self.sending:
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

    def send_dtmf(self, digits: str, duration_ms: int) -> None:
        """Queue RFC 4733 events; raises LegError when no telephone-event was negotiated."""
        if self.te_payload_type is None:
            raise LegError("the peer did not negotiate telephone-event")
        try:
            for digit in digits:
                digit_to_event(digit)
        except DtmfError as exc:
            raise LegError(str(exc)) from None
        self._dtmf_digits.extend((digit, duration_ms) for digit in digits)

    def _prepare_dtmf(self) -> bool:
        """Prepare the next DTMF packet if one is due; False leaves the tick to audio."""
        if not self._dtmf_packets:
            if self._dtmf_gap:
                self._dtmf_gap -= 1
                return False
            digit, duration_ms = self._dtmf_digits.popleft()
            self._dtmf_packets.extend(self.dtmf_sender.packets(digit, duration_ms, self.timestamp))
            STATS.dtmf_out += 1
        packet = self._dtmf_packets.popleft()
        te = self.te_payload_type
        if self.ready and self.sending and te is not None:
            self._prepare(te, packet.marker, packet.timestamp, packet.payload)
        if not self._dtmf_packets:
            self._dtmf_gap = DTMF_GAP_TICKS
        return True

    # ------------------------------------------------------------------ caller audio (per tick)

    def due_slots(self, now: float) -> list[Slot]:
        """The jitter buffer's slots due by ``now`` (a packet or a concealment each), at most
        MAX_FRAMES_PER_TICK; the worker decodes the audio of all its legs' slots in one go."""
        jitter = self.jitter
        item = jitter.get(now)
        if item is None:
            return []
        slots: list[Slot] = [item]
        while len(slots) < MAX_FRAMES_PER_TICK and (item := jitter.get(now)) is not None:
            slots.append(item)
        return slots

    def play_slots(self, now: float, slots: list[Slot]) -> None:
        """The due slots as caller frames, their audio packets already decoded by ``decode_slots``."""
        for item in slots:
            if type(item) is bytes:
                pcm = self._last_pcm = item
            elif type(item) is RtpPacket:  # a telephone event's slot: the caller hears the tone, ASR silence
                pcm = self._last_pcm = bytes(self.ptime * CLOCK_RATE // 1000 * 2)
            else:
                last = None if self._last_pcm is None else np.frombuffer(self._last_pcm, dtype=np.int16)
                pcm = conceal_pcm16(last, item, self.ptime * CLOCK_RATE // 1000).tobytes()  # type: ignore[arg-type]
            self._caller_frame(pcm)
        for digit in self.dtmf_receiver.flush(now):
            self._dtmf_received(digit.digit, digit.duration)
        if self.recorder is not None:
            self.recorder.tick(self._agent_frame)

    def _caller_frame(self, pcm: bytes) -> None:
        """One caller frame of PCM16 (native order): VAD, barge-in, recording, audio:in."""
        if len(pcm) in _VAD_FRAME_BYTES:
            event = self.speech.process(pcm)
            if event is not None:
                at_ms = event.time_ms
                if isinstance(event, SpeechStarted):
                    self._emit(SpeechStartedEvent(at_ms=at_ms))
                else:
                    # The detector confirms the end of speech some silence after it happened, and the
                    # frame played out of the jitter buffer its delay after it arrived: the turn latency
                    # runs from the arrival of the caller's last speech, as the caller lives it.
                    silence_s = (event.detected_ms - event.time_ms) / 1000
                    self._speech_ended = time.monotonic() - silence_s - self.jitter.delay
                    self._emit(SpeechStopped(at_ms=at_ms))
            speech = self._vad.last
            playout = self.playout
            playout.hold = self.activity.feed(speech)
            playing_ms = playout.playing_ms() if self.barge_in_enabled else None
            if self.barge_in.feed(speech, playing_ms) and playout.pause() is not None:
                self._paused_at = time.monotonic()
                STATS.pauses += 1
        if self.recorder is not None:
            self.recorder.caller(np.frombuffer(pcm, dtype=np.int16))
        self._publish_frame(pcm)

    def _publish_frame(self, pcm: bytes) -> None:
        batch = self._batch
        frames = 1
        per_message = self.settings.frames_per_message
        if batch or per_message > 1:
            batch.append(pcm)
            if len(batch) < per_message:
                return
            pcm, frames = b"".join(batch), len(batch)
            batch.clear()
        first = self._frames_out
        self._frames_out = first + frames
        self.sink.frame(self.call_id, pcm, CLOCK_RATE, first, first * FRAME_MS)

    # ------------------------------------------------------------------ housekeeping (a few times a second)

    def tick_slow(self, now: float) -> None:
        self._sync_jitter_counters()
        if (
            self.playout.paused is not None
            and now - self._paused_at >= self.settings.barge_in_pause_max_ms / 1000
        ):
            # Nobody decided (the conversation's worker is gone): a caller still talking has the floor,
            # one who fell silent hears the agent go on.
            if self.activity.speaking:
                self.cut_for_caller()
            else:
                self.playout.resume("")
        if self.ready and self.receiving and not self.timed_out:
            idle = now - self.last_rx
            if idle >= self.settings.rtp_timeout:
                self.timed_out = True
                STATS.timeouts += 1
                self._emit(MediaTimeout(idle_s=round(idle, 3)))
        elif self.timed_out and now - self.last_rx < self.settings.rtp_timeout:
            self.timed_out = False  # the media came back: a later silence is reported again
        if self.reports.due(now):
            self.send_rtcp()

    def _sync_jitter_counters(self) -> None:
        jitter = self.jitter
        STATS.jitter_late += jitter.late - self._synced_late
        STATS.jitter_lost += max(0, jitter.lost) - self._synced_lost
        self._synced_late = jitter.late
        self._synced_lost = max(0, jitter.lost)

    def send_rtcp(self, bye: bool = False) -> None:
        if not self.ready:
            return
        dest = self.rtcp_destination()
        transport = self.rtp_transport if self.rtcp_mux else self.rtcp_transport
        if dest is None or transport is None:
            return
        data = self.reports.build(self.timestamp, bye)
        if self.session is not None:
            data = self.session.protect_rtcp(data)
        elif self.srtp:
            return
        transport.sendto(data, dest)
        STATS.rtcp_out += 1

    def rtcp_destination(self) -> Address | None:
        if self.rtcp_mux:
            return self.destination()
        if self.rtcp_remote is not None:
            return self.rtcp_remote
        dest = self.destination()
        return (dest[0], dest[1] + 1) if dest is not None else None

    # ------------------------------------------------------------------ commands

    def set_barge_in(self, enabled: bool, guard_ms: int = -1, min_speech_ms: int = -1) -> None:
        """The call's playbook policy; -1 keeps the ``[media]`` setting."""
        settings = self.settings
        guard = settings.barge_in_guard_ms if guard_ms < 0 else guard_ms
        min_speech = settings.barge_in_min_speech_ms if min_speech_ms < 0 else min_speech_ms
        self.barge_in = BargeInDetector(guard, min_speech, self.barge_in.frame_ms)
        self.barge_in_enabled = enabled

    def cut_for_caller(self) -> bool:
        """Stop the playing (or paused) turn and those queued behind it: the caller took the floor."""
        if self.playout.barge_in() is None:
            return False
        STATS.barge_ins += 1
        return True

    def start_recording(self, path: Path) -> None:
        if self.recorder is not None:
            self.recorder.close()
        self.recorder = StereoRecorder(path, CLOCK_RATE, FRAME_SAMPLES)

    def _emit(self, message: Message) -> None:
        if type(message) is PlaybackStarted:
            # The playout takes a turn's first frame in prepare_tx, a tick before it is sent.
            self._started = message
            return
        self.sink.event(self.call_id, message)

    def _announce_playback(self, message: PlaybackStarted) -> None:
        """PlaybackStarted as the turn's first packet leaves, with the turn latency when the caller's
        speech ended before it."""
        if self._speech_ended is not None:
            latency = time.monotonic() - self._speech_ended
            message.latency_ms = int(latency * 1000)
            TURN_LATENCY.observe(latency)
            self._speech_ended = None
        self.sink.event(self.call_id, message)

    def report_error(self, error: str) -> None:
        self._emit(CallError(source="media", error=error))

    def close(self) -> None:
        """RTCP BYE, then the sockets; the worker releases the ports."""
        if self.closed:
            return
        self.closed = True
        for digit in self.dtmf_receiver.close():
            self._dtmf_received(digit.digit, digit.duration)
        self._sync_jitter_counters()
        try:
            self.send_rtcp(bye=True)
        except (OSError, SrtpError) as exc:
            log.debug("rtcp bye not sent", extra={"leg": self.leg_id, "error": str(exc)})
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        for transport in (self.rtp_transport, self.rtcp_transport):
            if transport is not None:
                transport.close()
        # The transports' protocols and the playout's emit lead back here: without these references a
        # closed leg is freed by reference counting, not left in cycles for a full collection.
        self.rtp_transport = self.rtcp_transport = None
        self.playout.emit = _ignore


def _ignore(message: Message) -> None:
    """What a closed leg's playout emits to."""


def decode_slots(due: list[tuple[Leg, list[Slot]]]) -> None:
    """Replace every audio packet among the legs' due slots by its PCM16: one table lookup per codec
    for the whole tick rather than a few numpy calls per frame."""
    by_codec: dict[str, tuple[G711Codec, list[bytes], list[tuple[list[Slot], int]]]] = {}
    for leg, slots in due:
        payload_type = leg.payload_type
        for index, item in enumerate(slots):
            if type(item) is RtpPacket and item.payload_type == payload_type:
                group = by_codec.get(leg.codec.name)
                if group is None:
                    group = by_codec[leg.codec.name] = (leg.codec, [], [])
                group[1].append(item.payload)
                group[2].append((slots, index))
    for codec, payloads, places in by_codec.values():
        for (slots, index), pcm in zip(places, codec.decode_many(payloads), strict=True):
            slots[index] = pcm


def _failure_kind(exc: SrtpError) -> str:
    if isinstance(exc, SrtpAuthError):
        return "auth"
    if isinstance(exc, SrtpReplayError):
        return "replay"
    return "malformed"
