"""The receiving half of a leg: the caller's RTP and RTCP in, and the caller's audio out to the bus.

A datagram goes through SRTP (RFC 3711 section 3.3), the payload type check and symmetric latching
straight into the jitter buffer; the worker's tick then takes the due slots (``due_slots``), decodes
the audio of all its legs in one go (``decode_slots``) and plays them (``play_slots``): each frame
feeds the VAD and goes out as ``audio:in``. RFC 4733 telephone events are taken as they arrive.

What needs the sending half too (barge-in, holding a turn back, the turn latency) is the leg's to
decide: the receiver tells its :class:`CallerListener` and keeps to the caller's side.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

import numpy as np

from activecall.config import MediaSettings
from activecall.media.bargein import CallerActivity
from activecall.media.dtmf import DtmfDigit, DtmfError, DtmfReceiver
from activecall.media.g711 import PCMU, G711Codec
from activecall.media.jitterbuffer import Concealment, JitterBuffer, conceal_pcm16
from activecall.media.metrics import STATS
from activecall.media.reports import RtcpReports
from activecall.media.rtcp import RtcpError, parse_compound
from activecall.media.rtp import RtpError, RtpPacket, is_rtcp
from activecall.media.srtp import SrtpAuthError, SrtpError, SrtpReplayError, SrtpSession
from activecall.media.vad import Frame, SpeechDetector, SpeechEvent, SpeechStarted, Vad
from activecall.messages import DtmfReceived, Message, SpeechStopped
from activecall.messages import SpeechStarted as SpeechStartedEvent

log = logging.getLogger("activecall.media.receiver")

FRAME_MS: Final = 20
CLOCK_RATE: Final = 8000
RELATCH_PACKETS: Final = 3  # plain RTP from a new source must arrive this often in a row to be followed
MAX_FRAMES_PER_TICK: Final = 8
_VAD_FRAME_BYTES: Final = frozenset((160, 320, 480))  # 10, 20 and 30 ms of PCM16 at 8 kHz

Address = tuple[str, int]
Slot = RtpPacket | Concealment | bytes  # bytes: an audio packet decoded to PCM16


class FrameSink(Protocol):
    """Where the caller's frames go (the worker's bus writer)."""

    def frame(self, call_id: str, pcm: bytes, sample_rate: int, seq: int, at_ms: int) -> None: ...


class CallerListener(Protocol):
    """What the receiver tells its leg."""

    def caller_event(self, message: Message) -> None:
        """SpeechStarted, SpeechStopped or DtmfReceived, for the bus."""

    def caller_voice(self, speech: bool, speaking: bool) -> None:
        """One VAD frame: its decision, and whether the caller is speaking now."""

    def caller_key(self) -> None:
        """A key press, just before its DtmfReceived."""

    def source_latched(self, address: Address) -> None:
        """The peer's packets now come from ``address``: send there."""


class _Unheard:
    """The listener of a receiver nobody listens to (alone in a test, or closed)."""

    def caller_event(self, message: Message) -> None:
        pass

    def caller_voice(self, speech: bool, speaking: bool) -> None:
        pass

    def caller_key(self) -> None:
        pass

    def source_latched(self, address: Address) -> None:
        pass


UNHEARD: Final = _Unheard()


class _RememberingVad:
    """Passes frames to a detector and keeps its last decision for barge-in."""

    def __init__(self, inner: Vad) -> None:
        self.inner = inner
        self.last = False

    def is_speech(self, frame: Frame, sample_rate: int) -> bool:
        self.last = self.inner.is_speech(frame, sample_rate)
        return self.last


class LegReceiver:
    """RTP in: SRTP unprotect, latching, the jitter buffer, VAD and DTMF in, ``audio:in`` out.

    ``ready`` is set by the first remote description; until then every packet is dropped."""

    def __init__(
        self,
        *,
        call_id: str,
        leg_id: str,
        settings: MediaSettings,
        sink: FrameSink,
        vad: Vad,
        reports: RtcpReports,
        srtp: bool = False,
        rtcp_mux: bool = False,
        speech_stop_ms: int = 500,
        listener: CallerListener = UNHEARD,
    ) -> None:
        self.call_id = call_id
        self.leg_id = leg_id
        self.settings = settings
        self.sink = sink
        self.reports = reports
        self.srtp = srtp
        self.rtcp_mux = rtcp_mux
        self.listener = listener
        self.session: SrtpSession | None = None
        self.codec: G711Codec = PCMU
        self.payload_type = PCMU.payload_type
        self.te_payload_type: int | None = None
        self.ptime = FRAME_MS
        self.ready = False
        self.receiving = True
        self.jitter = self._new_jitter_buffer()
        self.dtmf = DtmfReceiver()
        self._vad = _RememberingVad(vad)
        self.speech = self._new_speech_detector(speech_stop_ms)
        self.activity = CallerActivity()
        self.speech_ended: float | None = None  # when the caller's last turn ended, for the turn latency
        self.record: Callable[[np.ndarray], None] | None = None  # the recording's caller channel
        self.latched: Address | None = None
        self.rtcp_remote: Address | None = None
        self._candidate: Address | None = None
        self._candidate_count = 0
        self.last_rx = time.monotonic()
        self.timed_out = False
        self._last_pcm: bytes | None = None  # PCM16 of the last frame played, for concealment
        self._frames_out = 0
        self._batch: list[bytes] = []
        self._synced_late = 0
        self._synced_lost = 0

    def _new_jitter_buffer(self) -> JitterBuffer:
        s = self.settings
        low = max(self.ptime, s.jitter_min_ms)
        return JitterBuffer(frame_ms=self.ptime, min_delay_ms=low, max_delay_ms=max(low, s.jitter_max_ms))

    def _new_speech_detector(self, stop_ms: int) -> SpeechDetector:
        start_ms = max(FRAME_MS, self.settings.barge_in_min_speech_ms)
        return SpeechDetector(self._vad, CLOCK_RATE, frame_ms=FRAME_MS, start_ms=start_ms, stop_ms=stop_ms)

    # ------------------------------------------------------------------ setup

    def configure(self, codec: G711Codec, payload_type: int, te_payload_type: int | None, ptime: int) -> None:
        """The formats the peer sends (RFC 3264): the jitter buffer's frame follows its packet size."""
        self.codec = codec
        self.payload_type = payload_type
        self.te_payload_type = te_payload_type
        if ptime != self.ptime:
            self.ptime = ptime
            self.jitter = self._new_jitter_buffer()
            self.speech.frame_ms = ptime

    def start(self) -> None:
        """Take packets from now on; the RTP timeout counts from the first remote description."""
        if not self.ready:
            self.last_rx = time.monotonic()
        self.ready = True

    def unlatch(self) -> None:
        """A new address in the SDP: the peer's packets decide again where they come from."""
        self.latched = None
        self.rtcp_remote = None

    # ------------------------------------------------------------------ per packet

    def on_rtp(self, data: bytes, addr: Address) -> None:
        if self.rtcp_mux and is_rtcp(data):  # RFC 5761 section 4
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
                stats.srtp_failures[failure_kind(exc)] += 1
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
        """Symmetric RTP (RFC 4961): send where the peer's packets come from. An authenticated SRTP
        packet moves the latch at once; plain RTP must come from the new source RELATCH_PACKETS times
        in a row."""
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
        self.listener.source_latched(addr)
        return True

    def _on_telephone_event(self, packet: RtpPacket, now: float) -> None:
        try:
            digits = self.dtmf.receive_packet(packet, now)
        except DtmfError:
            STATS.dropped["malformed"] += 1
            return
        self._keys_pressed(digits)

    def _keys_pressed(self, digits: list[DtmfDigit]) -> None:
        for digit in digits:
            STATS.dtmf_in += 1
            # A key press is the caller's turn: the answer is timed from it.
            self.speech_ended = time.monotonic()
            self.listener.caller_key()
            duration_ms = digit.duration * 1000 // CLOCK_RATE
            self.listener.caller_event(DtmfReceived(digit=digit.digit, duration_ms=duration_ms))

    def on_rtcp(self, data: bytes, addr: Address) -> None:
        """The peer's compound RTCP (RFC 3550 section 6), through SRTCP (RFC 3711 section 3.4)."""
        session = self.session
        if session is not None:
            try:
                data = session.unprotect_rtcp(data)
            except SrtpError as exc:
                STATS.srtp_failures[failure_kind(exc)] += 1
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

    # ------------------------------------------------------------------ per tick

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
        if digits := self.dtmf.flush(now):
            self._keys_pressed(digits)

    def _caller_frame(self, pcm: bytes) -> None:
        """One caller frame of PCM16 (native order): VAD, recording, audio:in."""
        if len(pcm) in _VAD_FRAME_BYTES:
            event = self.speech.process(pcm)
            if event is not None:
                self._speech_event(event)
            speech = self._vad.last
            self.listener.caller_voice(speech, self.activity.feed(speech))
        if self.record is not None:
            self.record(np.frombuffer(pcm, dtype=np.int16))
        self._publish_frame(pcm)

    def _speech_event(self, event: SpeechEvent) -> None:
        at_ms = event.time_ms
        if isinstance(event, SpeechStarted):
            self.listener.caller_event(SpeechStartedEvent(at_ms=at_ms))
            return
        # The detector confirms the end of speech some silence after it happened, and the frame played
        # out of the jitter buffer its delay after it arrived: the turn latency runs from the arrival
        # of the caller's last speech, as the caller lives it.
        silence_s = (event.detected_ms - event.time_ms) / 1000
        self.speech_ended = time.monotonic() - silence_s - self.jitter.delay
        self.listener.caller_event(SpeechStopped(at_ms=at_ms))

    @property
    def clock_ms(self) -> int:
        """The caller's media clock: the end of the last frame played out (the ``at_ms`` scale)."""
        return (self._frames_out + len(self._batch)) * FRAME_MS

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

    # ------------------------------------------------------------------ housekeeping

    def check_timeout(self, now: float) -> float | None:
        """The seconds without RTP once they reach ``rtp_timeout``, reported once per silence."""
        idle = now - self.last_rx
        if self.ready and self.receiving and not self.timed_out:
            if idle >= self.settings.rtp_timeout:
                self.timed_out = True
                STATS.timeouts += 1
                return idle
        elif self.timed_out and idle < self.settings.rtp_timeout:
            self.timed_out = False  # the media came back: a later silence is reported again
        return None

    def sync_counters(self) -> None:
        """The jitter buffer's late and lost packets into the worker's statistics."""
        jitter = self.jitter
        STATS.jitter_late += jitter.late - self._synced_late
        STATS.jitter_lost += max(0, jitter.lost) - self._synced_lost
        self._synced_late = jitter.late
        self._synced_lost = max(0, jitter.lost)

    def close(self) -> None:
        """A digit still sounding counts as pressed; then nobody hears from this receiver again."""
        self._keys_pressed(self.dtmf.close())
        self.sync_counters()
        self.listener = UNHEARD
        self.record = None


def decode_slots(due: list[tuple[LegReceiver, list[Slot]]]) -> None:
    """Replace every audio packet among the receivers' due slots by its PCM16: one table lookup per
    codec for the whole tick rather than a few numpy calls per frame."""
    by_codec: dict[str, tuple[G711Codec, list[bytes], list[tuple[list[Slot], int]]]] = {}
    for receiver, slots in due:
        payload_type = receiver.payload_type
        for index, item in enumerate(slots):
            if type(item) is RtpPacket and item.payload_type == payload_type:
                group = by_codec.get(receiver.codec.name)
                if group is None:
                    group = by_codec[receiver.codec.name] = (receiver.codec, [], [])
                group[1].append(item.payload)
                group[2].append((slots, index))
    for codec, payloads, places in by_codec.values():
        for (slots, index), pcm in zip(places, codec.decode_many(payloads), strict=True):
            slots[index] = pcm


def failure_kind(exc: SrtpError) -> str:
    """The label of an SRTP failure in the worker's statistics."""
    if isinstance(exc, SrtpAuthError):
        return "auth"
    if isinstance(exc, SrtpReplayError):
        return "replay"
    return "malformed"


def _nothing() -> None:
    """What a socket runs before each datagram when no pacer asks for anything."""


class RtpProtocol(asyncio.DatagramProtocol):
    """A leg's socket, feeding its receiver. ``before_packet`` runs ahead of each datagram: the
    worker's pacer runs a tick that fell due while a burst of datagrams was being taken in."""

    def __init__(
        self, receiver: LegReceiver, rtcp: bool = False, before_packet: Callable[[], None] = _nothing
    ) -> None:
        self.leg_id = receiver.leg_id
        self.receive = receiver.on_rtcp if rtcp else receiver.on_rtp
        self.before_packet = before_packet

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.before_packet()
        self.receive(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that went away; the RTP timeout deals with it.
        log.debug("rtp socket error", extra={"leg": self.leg_id, "error": str(exc)})
