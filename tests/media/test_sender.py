"""The sending half of a leg on its own: no receiver, no worker, no socket; the ticks are driven by hand."""

from __future__ import annotations

import numpy as np
import pytest

from activecall.media.dtmf import DtmfError, TelephoneEvent
from activecall.media.g711 import PCMA, PCMU
from activecall.media.reports import RtcpReports
from activecall.media.rtp import RtpPacket
from activecall.media.sender import DTMF_GAP_TICKS, LegSender
from activecall.media.srtp import SrtpProfile, SrtpSession, generate_key_salt
from activecall.messages import Message, PlaybackFinished, PlaybackStarted

SSRC = 0x11223344
PEER = ("192.0.2.7", 40000)
RAMP = (np.arange(800) * 37 % 4000 - 2000).astype("<i2")  # 100 ms of agent audio, five frames


class Wire:
    """The socket: what was sent and where."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int], /) -> None:
        self.sent.append((data, addr))


class Heard:
    def __init__(self) -> None:
        self.events: list[Message] = []

    def agent_event(self, message: Message) -> None:
        self.events.append(message)

    def playback_started(self, message: PlaybackStarted) -> None:
        self.events.append(message)


def sender_alone(srtp: bool = False) -> tuple[LegSender, Wire, Heard]:
    heard, wire = Heard(), Wire()
    sender = LegSender(reports=RtcpReports(SSRC, "test", 8000), srtp=srtp, listener=heard)
    sender.seq, sender.timestamp = 0xFFFF, 0xFFFFFF00  # both wrap within the first ticks
    sender.transport, sender.destination, sender.sending = wire, PEER, True
    return sender, wire, heard


def tick(sender: LegSender) -> None:
    sender.tick_tx()
    sender.prepare_tx()


def packets(wire: Wire) -> list[RtpPacket]:
    return [RtpPacket.parse(data) for data, _ in wire.sent]


def test_silence_goes_out_as_golden_packets_on_a_continuous_clock() -> None:
    sender, wire, _ = sender_alone()
    for _ in range(4):
        tick(sender)
    silence = "ff" * 160
    assert [data.hex() for data, _ in wire.sent] == [
        "8080ffffffffff0011223344" + silence,  # marker: the first packet of the stream
        "80000000ffffffa011223344" + silence,
        "800000010000004011223344" + silence,  # the timestamp wrapped
    ]
    assert {addr for _, addr in wire.sent} == {PEER}
    assert (sender.reports.sent_packets, sender.reports.sent_octets) == (3, 480)


def test_nothing_leaves_until_sending_but_the_clock_runs() -> None:
    sender, wire, _ = sender_alone()
    sender.sending = False
    for _ in range(3):
        tick(sender)
    assert wire.sent == [] and sender.seq == 0xFFFF
    assert sender.timestamp == (0xFFFFFF00 + 3 * 160) & 0xFFFFFFFF
    sender.sending = True
    tick(sender)
    tick(sender)
    (first,) = packets(wire)
    assert (first.marker, first.sequence_number, first.timestamp) == (True, 0xFFFF, 0x000000E0)


def test_agent_audio_is_encoded_marked_and_announced_as_its_first_packet_leaves() -> None:
    sender, wire, heard = sender_alone()
    tick(sender)  # silence prepared
    sender.playout.add_chunk("t1", 0, RAMP.tobytes(), 8000, True)
    tick(sender)  # sends the silence, prepares the turn's first frame
    assert heard.events == []
    tick(sender)
    assert [type(e) for e in heard.events] == [PlaybackStarted]
    for _ in range(6):
        tick(sender)
    audio = packets(wire)[1:6]
    assert [p.payload for p in audio] == [PCMU.encode(RAMP[i : i + 160]) for i in range(0, 800, 160)]
    assert [p.marker for p in audio] == [True, False, False, False, False]
    assert packets(wire)[6].payload == PCMU.silence(160)
    assert [type(e) for e in heard.events] == [PlaybackStarted, PlaybackFinished]
    finished = heard.events[1]
    assert isinstance(finished, PlaybackFinished) and (finished.turn_id, finished.played_ms) == ("t1", 100)


def test_the_agent_frame_of_each_tick_is_kept_for_the_recording() -> None:
    sender, _, _ = sender_alone()
    sender.sending = False  # recorded even when the peer does not want it
    sender.playout.add_chunk("t1", 0, RAMP.tobytes(), 8000, True)
    tick(sender)
    assert sender.agent_frame is None
    tick(sender)
    assert sender.agent_frame is not None and np.array_equal(sender.agent_frame, RAMP[:160])


def test_srtp_packets_are_protected_and_none_leaves_without_a_key() -> None:
    sender, wire, _ = sender_alone(srtp=True)
    tick(sender)
    tick(sender)
    assert wire.sent == []  # no session yet: nothing in the clear
    local, remote = generate_key_salt(), generate_key_salt()
    sender.session = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, local, remote)
    peer = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, remote, local)
    for _ in range(3):
        tick(sender)
    plain = [peer.unprotect(data) for data, _ in wire.sent]
    assert [len(data) for data, _ in wire.sent] == [12 + 160 + 10] * 2  # the 80-bit tag
    assert plain[0].hex() == "8080ffff0000004011223344" + "ff" * 160


def test_a_format_change_drops_the_packet_prepared_in_the_old_one() -> None:
    sender, wire, _ = sender_alone()
    tick(sender)
    tick(sender)
    sender.configure(PCMA, PCMA.payload_type, None)
    tick(sender)  # nothing prepared fits: nothing sent
    tick(sender)
    before, after = packets(wire)
    assert (before.payload_type, after.payload_type) == (0, 8)
    assert after.payload == PCMA.silence(160)
    assert (after.sequence_number - before.sequence_number) & 0xFFFF == 2
    assert (after.timestamp - before.timestamp) & 0xFFFFFFFF == 2 * 160


def test_a_stall_keeps_the_prepared_packet_s_timestamp_and_moves_the_clock() -> None:
    sender, wire, _ = sender_alone()
    tick(sender)
    tick(sender)
    sender.skip(5)
    tick(sender)
    tick(sender)
    first, late, after = packets(wire)
    assert (late.timestamp - first.timestamp) & 0xFFFFFFFF == 160
    assert (after.timestamp - late.timestamp) & 0xFFFFFFFF == 6 * 160
    assert [(p.sequence_number - first.sequence_number) & 0xFFFF for p in (late, after)] == [1, 2]


def test_dtmf_goes_out_as_rfc4733_events_with_a_gap_between_digits() -> None:
    sender, wire, _ = sender_alone()
    sender.configure(PCMU, 0, 101)
    tick(sender)
    sender.send_dtmf("1#", 100)
    for _ in range(7 + DTMF_GAP_TICKS + 7 + 2):
        tick(sender)
    sent = packets(wire)
    events = [(p, TelephoneEvent.parse(p.payload)) for p in sent if p.payload_type == 101]
    one, pound = events[:7], events[7:]
    for group, code in ((one, 1), (pound, 11)):
        assert [e.event for _, e in group] == [code] * 7
        assert [p.marker for p, _ in group] == [True] + [False] * 6
        assert [e.duration for _, e in group] == [160, 320, 480, 640, 800, 800, 800]
        assert [e.end for _, e in group] == [False] * 4 + [True] * 3
        assert len({p.timestamp for p, _ in group}) == 1
    assert (pound[0][0].timestamp - one[0][0].timestamp) & 0xFFFFFFFF == 160 * (7 + DTMF_GAP_TICKS)
    seqs = [p.sequence_number for p in sent]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert [p.payload_type for p in sent[8 : 8 + DTMF_GAP_TICKS]] == [0] * DTMF_GAP_TICKS


def test_dtmf_needs_a_negotiated_telephone_event_and_known_digits() -> None:
    sender, _, _ = sender_alone()
    with pytest.raises(DtmfError, match="did not negotiate telephone-event"):
        sender.send_dtmf("1", 100)
    sender.configure(PCMU, 0, 101)
    with pytest.raises(DtmfError):
        sender.send_dtmf("1x", 100)
    assert not sender._dtmf_digits  # nothing of a refused string is queued


def test_a_closed_sender_sends_and_tells_nothing() -> None:
    sender, wire, heard = sender_alone()
    sender.playout.add_chunk("t1", 0, RAMP.tobytes(), 8000, True)
    tick(sender)
    sender.close()
    tick(sender)
    sender.playout.cancel_all("stopped")
    assert wire.sent == [] and heard.events == []
