"""One RTP leg: its sockets, its SRTP session and RTCP, and the two halves that carry the audio.

The :class:`~activecall.media.receiver.LegReceiver` takes the caller's packets in and sends the
caller's frames to the bus; the :class:`~activecall.media.sender.LegSender` sends the agent's. The
leg applies the remote description to both, and decides what needs both: caller speech that holds
back or cuts the agent's turn (barge-in), a key press that cuts a prompt, the turn latency from the
end of the caller's speech to the answer's first packet, the RTCP reports, the RTP timeout.

The worker drives the halves directly on its pacing ticks: ``sender.tick_tx`` first, then the
receiver's due slots decoded for all legs at once and played (``play_slots``), then ``tick_slow`` a
few times a second, then ``sender.prepare_tx``.

A leg that reported ``media.timeout`` and was neither closed nor updated within ``[media]
orphan_grace`` is an orphan (:meth:`Leg.orphaned`): its edge is gone, and the worker closes it
(:mod:`activecall.media.orphans`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from pathlib import Path
from typing import Final, Protocol

from activecall.config import MediaSettings
from activecall.media.bargein import BargeInDetector
from activecall.media.dtmf import DtmfError
from activecall.media.g711 import CODECS_BY_NAME, CODECS_BY_PAYLOAD_TYPE, G711Codec
from activecall.media.jitterbuffer import JitterBuffer
from activecall.media.metrics import STATS, TURN_LATENCY
from activecall.media.playout import FRAME_SAMPLES, Playout
from activecall.media.ports import BoundPair
from activecall.media.receiver import CLOCK_RATE, FRAME_MS, Address, FrameSink, LegReceiver, Slot
from activecall.media.receiver import RELATCH_PACKETS as RELATCH_PACKETS
from activecall.media.recorder import StereoRecorder
from activecall.media.reports import RtcpReports
from activecall.media.sender import DTMF_GAP_TICKS as DTMF_GAP_TICKS
from activecall.media.sender import LegSender
from activecall.media.srtp import (
    SrtpError,
    SrtpKeyError,
    SrtpProfile,
    SrtpSession,
    generate_key_salt,
    parse_sdes_inline,
)
from activecall.media.vad import Vad
from activecall.messages import CallError, LegUpdate, MediaTimeout, Message, PlaybackStarted

log = logging.getLogger("activecall.media.leg")

DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")


class LegError(ValueError):
    """A leg.update the leg cannot apply (codec, direction, crypto)."""


class LegSink(FrameSink, Protocol):
    """Where a leg's frames and events go (the worker's bus writer)."""

    def event(self, call_id: str, message: Message) -> None: ...


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
        self._remote_key = b""
        self.rtp_transport: asyncio.DatagramTransport | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None
        self.ptime = FRAME_MS
        self.direction = "sendrecv"
        self.remote: Address | None = None
        self.ready = False
        self.closed = False
        self.reports = RtcpReports(secrets.randbits(32), cname, CLOCK_RATE)
        self.sender = LegSender(reports=self.reports, srtp=srtp, listener=self)
        self.receiver = LegReceiver(
            call_id=call_id,
            leg_id=leg_id,
            settings=settings,
            sink=sink,
            vad=vad,
            reports=self.reports,
            srtp=srtp,
            rtcp_mux=rtcp_mux,
            speech_stop_ms=speech_stop_ms,
            listener=self,
        )
        self.playout: Playout = self.sender.playout  # the sender's for its whole life
        self.barge_in = BargeInDetector(settings.barge_in_guard_ms, settings.barge_in_min_speech_ms, FRAME_MS)
        self.barge_in_enabled = True
        self._paused_at = 0.0  # when caller speech paused the playing turn
        self.recorder: StereoRecorder | None = None
        self.orphan_due: float | None = None  # set by an unanswered media.timeout
        self.clock_offset_ms = 0  # a takeover leg's caller clock goes on from its predecessor's

    # ------------------------------------------------------------------ what the halves hold

    @property
    def port(self) -> int:
        return self.ports.rtp_port

    @property
    def sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receiving(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")

    @property
    def session(self) -> SrtpSession | None:
        return self.receiver.session

    @property
    def jitter(self) -> JitterBuffer:
        return self.receiver.jitter

    @property
    def latched(self) -> Address | None:
        return self.receiver.latched

    def destination(self) -> Address | None:
        return self.receiver.latched or self.remote

    # ------------------------------------------------------------------ setup

    def update(self, msg: LegUpdate) -> None:
        """Apply the remote description (RFC 3264): address, codec, DTMF, ptime, direction, SDES key."""
        codec = self._codec_of(msg)
        if msg.direction not in DIRECTIONS:
            raise LegError(f"unknown direction {msg.direction!r}")
        ptime = self._ptime_of(msg)
        if self.srtp:
            self._update_crypto(msg.remote_crypto_suite, msg.remote_crypto_key)
        remote = (msg.remote_address, msg.remote_port) if msg.remote_address and msg.remote_port else None
        if remote != self.remote:
            self.remote = remote
            self.receiver.unlatch()  # a new SDP address: it holds until the peer's packets say otherwise
        payload_type = msg.payload_type if msg.payload_type else codec.payload_type
        te_payload_type = msg.telephone_event_pt or None
        self.sender.configure(codec, payload_type, te_payload_type)
        self.receiver.configure(codec, payload_type, te_payload_type, ptime)
        self.ptime = self.barge_in.frame_ms = ptime  # the peer's packet size sets the caller's frame
        self.direction = msg.direction
        self.ready = True
        self.orphan_due = None  # an edge answered
        self._start_halves()

    def _start_halves(self) -> None:
        receiver, sender = self.receiver, self.sender
        receiver.receiving = self.receiving
        receiver.start()
        sender.sending = self.sending
        sender.destination = self.destination()

    @staticmethod
    def _ptime_of(msg: LegUpdate) -> int:
        ptime = msg.ptime or FRAME_MS
        if ptime not in (10, 20, 30):
            raise LegError(f"ptime {msg.ptime} is not supported (10, 20 or 30 ms)")
        return ptime

    @staticmethod
    def _codec_of(msg: LegUpdate) -> G711Codec:
        codec = CODECS_BY_NAME.get(msg.codec.upper()) if msg.codec else None
        if codec is None and not msg.codec:
            codec = CODECS_BY_PAYLOAD_TYPE.get(msg.payload_type)
        if codec is None:
            raise LegError(f"codec {msg.codec!r} is not supported (PCMU, PCMA)")
        return codec

    def _update_crypto(self, suite: str, key_params: str) -> None:
        """SDES (RFC 4568): one session for both halves, so a re-INVITE keeps its counters."""
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
        self.receiver.session = self.sender.session = SrtpSession(profile, self.local_key, remote_key)
        self._remote_key = remote_key

    def attach(self, rtp: asyncio.DatagramTransport, rtcp: asyncio.DatagramTransport | None) -> None:
        self.rtp_transport = rtp
        self.rtcp_transport = rtcp
        self.sender.transport = rtp

    # ------------------------------------------------------------------ what the receiver tells

    def caller_event(self, message: Message) -> None:
        self.sink.event(self.call_id, message)

    def caller_voice(self, speech: bool, speaking: bool) -> None:
        """A caller speaking holds back a turn not yet started, and long enough cuts a playing one."""
        playout = self.playout
        playout.hold = speaking
        playing_ms = playout.playing_ms() if self.barge_in_enabled else None
        if self.barge_in.feed(speech, playing_ms) and playout.pause() is not None:
            self._paused_at = time.monotonic()
            STATS.pauses += 1

    def caller_key(self) -> None:
        # A key press is deliberate, so no guard time: it cuts a menu prompt at once, as callers expect.
        current = self.playout.current
        if self.barge_in_enabled and (current is None or current.interruptible):
            self.cut_for_caller()

    def source_latched(self, address: Address) -> None:
        self.sender.destination = address

    # ------------------------------------------------------------------ what the sender tells

    def agent_event(self, message: Message) -> None:
        self.sink.event(self.call_id, message)

    def playback_started(self, message: PlaybackStarted) -> None:
        """PlaybackStarted as the turn's first packet leaves, with the turn latency when the caller's
        speech ended before it."""
        receiver = self.receiver
        if receiver.speech_ended is not None:
            latency = time.monotonic() - receiver.speech_ended
            message.latency_ms = int(latency * 1000)
            TURN_LATENCY.observe(latency)
            receiver.speech_ended = None
        self.sink.event(self.call_id, message)

    # ------------------------------------------------------------------ per tick

    def play_slots(self, now: float, slots: list[Slot]) -> None:
        """The caller's due frames, then this tick's stereo frame of the recording."""
        self.receiver.play_slots(now, slots)
        if self.recorder is not None:
            self.recorder.tick(self.sender.agent_frame)

    def tick_slow(self, now: float) -> None:
        """A few times a second: counters, a paused turn nobody decided on, RTP timeout, RTCP."""
        receiver = self.receiver
        receiver.sync_counters()
        if (
            self.playout.paused is not None
            and now - self._paused_at >= self.settings.barge_in_pause_max_ms / 1000
        ):
            # Nobody decided (the conversation's worker is gone): a caller still talking has the floor,
            # one who fell silent hears the agent go on.
            if receiver.activity.speaking:
                self.cut_for_caller()
            else:
                self.playout.resume("")
        idle = receiver.check_timeout(now)
        if idle is not None:
            self.sink.event(self.call_id, MediaTimeout(idle_s=round(idle, 3)))
            self.orphan_due = now + self.settings.orphan_grace
        elif not receiver.timed_out:
            self.orphan_due = None  # the caller's media came back
        if self.reports.due(now):
            self.send_rtcp()

    def start_at(self, not_before_ms: int, now: float) -> float:
        """The monotonic time at which the caller's media clock reaches ``not_before_ms`` (0: none).
        Turned into our own clock at once, so a caller whose packets stop does not hold a reply up."""
        ahead_ms = not_before_ms - (self.receiver.clock_ms + self.clock_offset_ms)
        return now + ahead_ms / 1000 if ahead_ms > 0 else 0.0

    def orphaned(self, now: float) -> bool:
        """It reported ``media.timeout`` and no edge closed or updated it within ``orphan_grace``."""
        return self.orphan_due is not None and now >= self.orphan_due

    def send_rtcp(self, bye: bool = False) -> None:
        """A compound report (RFC 3550 section 6.1), through SRTCP when the leg uses SRTP."""
        if not self.ready:
            return
        dest = self.rtcp_destination()
        transport = self.rtp_transport if self.rtcp_mux else self.rtcp_transport
        if dest is None or transport is None:
            return
        data = self.reports.build(self.sender.timestamp, bye)
        session = self.session
        if session is not None:
            data = session.protect_rtcp(data)
        elif self.srtp:
            return
        transport.sendto(data, dest)
        STATS.rtcp_out += 1

    def rtcp_destination(self) -> Address | None:
        """RTP's own address with rtcp-mux (RFC 5761), else where the peer's RTCP comes from, else the
        port above RTP's (RFC 3550 section 11)."""
        if self.rtcp_mux:
            return self.destination()
        if self.receiver.rtcp_remote is not None:
            return self.receiver.rtcp_remote
        dest = self.destination()
        return (dest[0], dest[1] + 1) if dest is not None else None

    # ------------------------------------------------------------------ commands

    def send_dtmf(self, digits: str, duration_ms: int) -> None:
        """Queue RFC 4733 events; raises LegError when no telephone-event was negotiated."""
        try:
            self.sender.send_dtmf(digits, duration_ms)
        except DtmfError as exc:
            raise LegError(str(exc)) from None

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
        self.receiver.record = self.recorder.caller

    def report_error(self, error: str) -> None:
        self.sink.event(self.call_id, CallError(source="media", error=error))

    def close(self) -> None:
        """RTCP BYE, then the sockets; the worker releases the ports."""
        if self.closed:
            return
        self.closed = True
        self.receiver.close()
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
        # The transports' protocols and the halves' listeners lead back here: without these references a
        # closed leg is freed by reference counting, not left in cycles for a full collection.
        self.rtp_transport = self.rtcp_transport = None
        self.sender.close()
