"""The receiving half of a leg on its own: no sender, no worker, no socket; a simulated clock."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np
import pytest

from activecall.config import MediaSettings
from activecall.media import receiver as receiver_module
from activecall.media.dtmf import TelephoneEvent
from activecall.media.g711 import PCMU
from activecall.media.metrics import STATS
from activecall.media.receiver import RELATCH_PACKETS, LegReceiver, decode_slots
from activecall.media.reports import RtcpReports
from activecall.media.rtcp import RtcpRrPacket, serialize_compound
from activecall.media.srtp import SrtpProfile, SrtpSession, generate_key_salt
from activecall.media.vad import Frame
from activecall.messages import DtmfReceived, Message, SpeechStarted, SpeechStopped

PEER = ("192.0.2.7", 40000)
ELSEWHERE = ("192.0.2.7", 40002)
HEADER = struct.Struct("!BBHII")
TONE = (np.sin(np.arange(160) / 2) * 8000).astype(np.int16)  # a loud 20 ms frame
QUIET = np.zeros(160, np.int16)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class LoudIsSpeech:
    def is_speech(self, frame: Frame, sample_rate: int) -> bool:
        return bool(np.abs(np.frombuffer(bytes(frame), np.int16)).mean() > 1000)


class Frames:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int, int]] = []  # pcm, seq, at_ms

    def frame(self, call_id: str, pcm: bytes, sample_rate: int, seq: int, at_ms: int) -> None:
        assert (call_id, sample_rate) == ("c1", 8000)
        self.sent.append((pcm, seq, at_ms))


class Heard:
    def __init__(self) -> None:
        self.events: list[Message] = []
        self.voice: list[tuple[bool, bool]] = []
        self.keys = 0
        self.latched: list[tuple[str, int]] = []

    def caller_event(self, message: Message) -> None:
        self.events.append(message)

    def caller_voice(self, speech: bool, speaking: bool) -> None:
        self.voice.append((speech, speaking))

    def caller_key(self) -> None:
        self.keys += 1
        self.events.append(DtmfReceived(digit="key pressed"))  # marks the order against the event

    def source_latched(self, address: tuple[str, int]) -> None:
        self.latched.append(address)


class Caller:
    """The far end: RTP (or SRTP) packets of PCMU frames, one per tick of the clock."""

    def __init__(self, receiver: LegReceiver, clock: Clock, session: SrtpSession | None = None) -> None:
        self.receiver, self.clock, self.session = receiver, clock, session
        self.seq, self.timestamp, self.ssrc = 65530, 4000, 0xCAFE
        self.source = PEER

    def packet(self, payload: bytes, pt: int = 0, marker: bool = False, advance: bool = True) -> bytes:
        data = HEADER.pack(0x80, pt | (0x80 if marker else 0), self.seq, self.timestamp, self.ssrc) + payload
        self.seq = (self.seq + 1) & 0xFFFF
        if advance:
            self.timestamp += 160
        return self.session.protect(data) if self.session is not None else data

    def say(self, frame: np.ndarray) -> bytes:
        data = self.packet(PCMU.encode(frame))
        self.receiver.on_rtp(data, self.source)
        return data

    def tick(self, frame: np.ndarray | None = None) -> None:
        """20 ms on: a frame (or none) arrives, then the receiver plays what is due."""
        self.clock.now += 0.02
        if frame is not None:
            self.say(frame)
        play(self.receiver, self.clock.now)


def play(receiver: LegReceiver, now: float) -> None:
    slots = receiver.due_slots(now)
    decode_slots([(receiver, slots)])
    receiver.play_slots(now, slots)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    clock = Clock()
    monkeypatch.setattr(receiver_module, "time", clock)
    yield clock


def receiver_alone(
    srtp: bool = False, rtcp_mux: bool = False, **settings: int
) -> tuple[LegReceiver, Frames, Heard]:
    sink, heard = Frames(), Heard()
    receiver = LegReceiver(
        call_id="c1",
        leg_id="l1",
        settings=MediaSettings(**settings),  # type: ignore[arg-type]
        sink=sink,
        vad=LoudIsSpeech(),
        reports=RtcpReports(0x1234, "test", 8000),
        srtp=srtp,
        rtcp_mux=rtcp_mux,
        speech_stop_ms=200,
        listener=heard,
    )
    receiver.configure(PCMU, 0, 101, 20)
    receiver.start()
    return receiver, sink, heard


def speech(seconds: float) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [(TONE * rng.uniform(0.5, 1.0)).astype(np.int16) for _ in range(int(seconds * 50))]


def test_packets_before_the_remote_description_are_dropped(clock: Clock) -> None:
    receiver, sink, _ = receiver_alone()
    receiver.ready = False
    dropped = STATS.dropped["not_ready"]
    Caller(receiver, clock).tick(TONE)
    assert STATS.dropped["not_ready"] == dropped + 1 and receiver.latched is None


def test_caller_audio_goes_out_decoded_in_order_with_frame_numbers(clock: Clock) -> None:
    receiver, sink, heard = receiver_alone()
    caller = Caller(receiver, clock)
    frames = speech(0.4)
    for frame in frames:
        caller.tick(frame)
    for _ in range(3):
        caller.tick()
    expected = [PCMU.decode_pcm16(PCMU.encode(f)) for f in frames]
    assert [pcm for pcm, _, _ in sink.sent[: len(frames)]] == expected
    assert [(seq, at_ms) for _, seq, at_ms in sink.sent[:3]] == [(0, 0), (1, 20), (2, 40)]
    assert heard.latched == [PEER] and receiver.latched == PEER
    assert receiver.reports.received.received == len(frames) and receiver.reports.remote_ssrc == 0xCAFE


def test_a_lost_packet_is_concealed_and_the_frames_stay_continuous(clock: Clock) -> None:
    receiver, sink, _ = receiver_alone(jitter_min_ms=40)
    caller = Caller(receiver, clock)
    for i, frame in enumerate(speech(0.3)):
        if i == 7:
            caller.packet(b"")  # lost on the way: its number and time go by
            caller.clock.now += 0.02
            play(receiver, clock.now)
            continue
        caller.tick(frame)
    caller.tick()
    caller.tick()
    assert [seq for _, seq, _ in sink.sent] == list(range(len(sink.sent)))
    assert len(sink.sent) >= 15
    concealed = sink.sent[7][0]
    last_good = np.frombuffer(sink.sent[6][0], np.int16).astype(np.float32)
    assert np.array_equal(np.frombuffer(concealed, np.int16), (last_good * 0.7).astype(np.int16))


def test_frames_are_batched_per_message_when_configured(clock: Clock) -> None:
    receiver, sink, _ = receiver_alone(frames_per_message=3)
    caller = Caller(receiver, clock)
    for frame in speech(0.2):
        caller.tick(frame)
    assert [(len(pcm), seq, at_ms) for pcm, seq, at_ms in sink.sent[:2]] == [(960, 0, 0), (960, 3, 60)]


def test_srtp_is_unprotected_and_forged_tampered_and_replayed_packets_are_dropped(clock: Clock) -> None:
    receiver, sink, _ = receiver_alone(srtp=True)
    local, remote = generate_key_salt(), generate_key_salt()
    receiver.session = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, local, remote)
    caller = Caller(receiver, clock, SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, remote, local))
    auth, replay = STATS.srtp_failures["auth"], STATS.srtp_failures["replay"]
    good = caller.say(TONE)
    tampered = bytearray(caller.packet(PCMU.encode(TONE)))
    tampered[20] ^= 1
    receiver.on_rtp(bytes(tampered), PEER)
    forger = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, generate_key_salt(), local)
    receiver.on_rtp(forger.protect(HEADER.pack(0x80, 0, 1, 1, 0xCAFE) + bytes(160)), PEER)
    receiver.on_rtp(good, PEER)
    caller.say(TONE)
    assert STATS.srtp_failures["auth"] - auth == 2
    assert STATS.srtp_failures["replay"] - replay == 1
    assert receiver.reports.received.received == 2


def test_other_payload_types_are_dropped(clock: Clock) -> None:
    receiver, _, _ = receiver_alone()
    caller = Caller(receiver, clock)
    dropped = STATS.dropped["payload_type"]
    receiver.on_rtp(caller.packet(PCMU.encode(TONE), pt=8), PEER)
    assert STATS.dropped["payload_type"] == dropped + 1 and receiver.reports.received.received == 0


def test_plain_rtp_moves_the_latch_only_after_packets_in_a_row(clock: Clock) -> None:
    receiver, _, heard = receiver_alone()
    caller = Caller(receiver, clock)
    caller.say(TONE)
    caller.source = ELSEWHERE
    for _ in range(RELATCH_PACKETS - 1):
        caller.say(TONE)
    caller.source = PEER
    caller.say(TONE)  # the latched source again: the move starts over
    caller.source = ELSEWHERE
    for _ in range(RELATCH_PACKETS - 1):
        caller.say(TONE)
    assert receiver.latched == PEER and heard.latched == [PEER]
    caller.say(TONE)
    assert receiver.latched == ELSEWHERE and heard.latched == [PEER, ELSEWHERE]


def test_srtp_moves_the_latch_at_once(clock: Clock) -> None:
    receiver, _, heard = receiver_alone(srtp=True)
    key = generate_key_salt()
    receiver.session = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, key, key)
    caller = Caller(receiver, clock, SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, key, key))
    caller.say(TONE)
    caller.source = ELSEWHERE
    caller.say(TONE)
    assert heard.latched == [PEER, ELSEWHERE]
    receiver.unlatch()
    assert receiver.latched is None


def test_a_key_press_is_told_once_before_its_event(clock: Clock) -> None:
    receiver, _, heard = receiver_alone()
    caller = Caller(receiver, clock)
    for _ in range(5):
        caller.tick(QUIET)
    durations = [160, 320, 480, 640, 960, 960, 960]
    for index, duration in enumerate(durations):
        event = TelephoneEvent(7, end=index >= 4, duration=duration)
        receiver.on_rtp(caller.packet(bytes(event), pt=101, marker=index == 0, advance=False), PEER)
        clock.now += 0.02
        play(receiver, clock.now)
    for _ in range(20):
        caller.tick(QUIET)
    assert heard.keys == 1
    assert heard.events == [DtmfReceived(digit="key pressed"), DtmfReceived(digit="7", duration_ms=120)]
    assert receiver.speech_ended is not None


def test_speech_is_detected_told_frame_by_frame_and_its_end_timed(clock: Clock) -> None:
    receiver, _, heard = receiver_alone()
    caller = Caller(receiver, clock)
    for frame in [QUIET] * 5 + speech(0.5) + [QUIET] * 15:
        caller.tick(frame)
    assert [type(e) for e in heard.events] == [SpeechStarted, SpeechStopped]
    started, stopped = heard.events
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    assert (started.at_ms, stopped.at_ms) == (100, 600)
    assert heard.voice[4:8] == [(False, False), (True, False), (True, True), (True, True)]
    # The end is timed from when the last speech arrived: the 200 ms of silence the detector waited
    # for, and the jitter buffer's delay, are taken off.
    assert receiver.speech_ended is not None and receiver.speech_ended < clock.now - 0.2


def test_rtcp_on_the_rtp_port_is_taken_with_rtcp_mux(clock: Clock) -> None:
    receiver, _, _ = receiver_alone(rtcp_mux=True)
    rtcp_in = STATS.rtcp_in
    receiver.on_rtp(serialize_compound([RtcpRrPacket(0xCAFE, [])]), PEER)
    assert STATS.rtcp_in == rtcp_in + 1 and receiver.rtcp_remote == PEER


def test_a_silent_peer_times_out_once_until_it_comes_back(clock: Clock) -> None:
    receiver, _, _ = receiver_alone(rtp_timeout=1)
    caller = Caller(receiver, clock)
    caller.tick(TONE)
    assert receiver.check_timeout(clock.now + 0.5) is None
    assert receiver.check_timeout(clock.now + 1.5) == pytest.approx(1.5)
    assert receiver.check_timeout(clock.now + 2.5) is None  # told once
    clock.now += 3
    caller.tick(TONE)
    assert receiver.check_timeout(clock.now) is None
    assert receiver.check_timeout(clock.now + 1.0) == pytest.approx(1.0)


def test_a_closed_receiver_tells_a_digit_still_sounding_and_then_nothing(clock: Clock) -> None:
    receiver, _, heard = receiver_alone()
    caller = Caller(receiver, clock)
    receiver.on_rtp(caller.packet(bytes(TelephoneEvent(3, duration=320)), pt=101, marker=True), PEER)
    receiver.close()
    assert [e.digit for e in heard.events if isinstance(e, DtmfReceived)] == ["key pressed", "3"]
    caller.tick(TONE)
    assert heard.voice == []
