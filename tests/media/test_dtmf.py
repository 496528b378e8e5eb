import pytest

from activecall.media.dtmf import (
    DTMF_DIGITS,
    DtmfDigit,
    DtmfError,
    DtmfPacket,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    digit_to_event,
    event_to_digit,
)
from activecall.media.rtp import RtpPacket


@pytest.mark.parametrize(
    ("hex_payload", "expected"),
    [
        ("050a00a0", TelephoneEvent(event=5, end=False, volume=10, duration=160)),
        ("0b8a0320", TelephoneEvent(event=11, end=True, volume=10, duration=800)),
        ("003f0000", TelephoneEvent(event=0, end=False, volume=63, duration=0)),
        ("0fbfffff", TelephoneEvent(event=15, end=True, volume=63, duration=0xFFFF)),
        ("10000140", TelephoneEvent(event=16, end=False, volume=0, duration=320)),
    ],
)
def test_telephone_event_golden_payloads(hex_payload: str, expected: TelephoneEvent) -> None:
    data = bytes.fromhex(hex_payload)
    assert TelephoneEvent.parse(data) == expected
    assert bytes(expected) == data


def test_reserved_bit_is_ignored_and_written_as_zero() -> None:
    event = TelephoneEvent.parse(bytes.fromhex("05ca00a0"))  # E=1, R=1, volume 10
    assert (event.end, event.volume) == (True, 10)
    assert bytes(event) == bytes.fromhex("058a00a0")


def test_short_payload_is_rejected() -> None:
    with pytest.raises(DtmfError, match="^telephone-event payload of 3 bytes is shorter than 4$"):
        TelephoneEvent.parse(b"\x05\x0a\x00")


def test_unencodable_event_is_rejected() -> None:
    with pytest.raises(DtmfError, match="duration 65536 does not fit 16 bits"):
        bytes(TelephoneEvent(1, duration=0x10000))
    with pytest.raises(DtmfError, match="volume 64 do not fit"):
        bytes(TelephoneEvent(1, volume=64))


def test_digit_event_mapping() -> None:
    assert [event_to_digit(e) for e in range(16)] == list("0123456789*#ABCD")
    assert event_to_digit(16) is None
    assert [digit_to_event(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert digit_to_event("a") == 12
    for bad in ("E", "", "12", "+"):
        with pytest.raises(DtmfError, match="is not a DTMF digit"):
            digit_to_event(bad)


def test_sender_sequence_for_100_ms() -> None:
    packets = DtmfSender().packets("5", 100, timestamp=1000)
    update = "050a{:04x}"
    end = "058a0320"
    assert packets == [
        DtmfPacket(bytes.fromhex(update.format(160)), 1000, True, 0),
        DtmfPacket(bytes.fromhex(update.format(320)), 1000, False, 20),
        DtmfPacket(bytes.fromhex(update.format(480)), 1000, False, 40),
        DtmfPacket(bytes.fromhex(update.format(640)), 1000, False, 60),
        DtmfPacket(bytes.fromhex(end), 1000, False, 80),
        DtmfPacket(bytes.fromhex(end), 1000, False, 100),
        DtmfPacket(bytes.fromhex(end), 1000, False, 120),
    ]


def test_sender_duration_not_a_multiple_of_the_interval() -> None:
    packets = DtmfSender(volume=7).packets("#", 50, timestamp=0)
    durations = [TelephoneEvent.parse(p.payload).duration for p in packets]
    ends = [TelephoneEvent.parse(p.payload).end for p in packets]
    assert durations == [160, 320, 400, 400, 400]
    assert ends == [False, False, True, True, True]
    assert [TelephoneEvent.parse(p.payload).volume for p in packets] == [7] * 5


def test_sender_short_digit_sends_end_packets_only_with_marker_on_first() -> None:
    packets = DtmfSender().packets("D", 10, timestamp=7)
    assert [(p.payload.hex(), p.marker) for p in packets] == [("0f8a0050", True), ("0f8a0050", False)] + [
        ("0f8a0050", False)
    ]


def test_sender_at_16_khz_grows_by_320() -> None:
    packets = DtmfSender(clock_rate=16000).packets("1", 60, timestamp=0)
    assert [TelephoneEvent.parse(p.payload).duration for p in packets] == [320, 640, 960, 960, 960]


def test_sender_rejects_bad_input() -> None:
    sender = DtmfSender()
    with pytest.raises(DtmfError, match="duration of 0 ms"):
        sender.packets("1", 0, 0)
    with pytest.raises(DtmfError, match="duration of 8200 ms does not fit one event segment"):
        sender.packets("1", 8200, 0)
    with pytest.raises(DtmfError, match="'x' is not a DTMF digit"):
        sender.packets("x", 100, 0)


def feed(receiver: DtmfReceiver, packets: list[DtmfPacket], start: float = 0.0) -> list[DtmfDigit]:
    digits = []
    for packet in packets:
        event = TelephoneEvent.parse(packet.payload)
        digits += receiver.receive(event, packet.timestamp, start + packet.offset_ms / 1000)
    return digits


def test_receiver_reports_sender_digit_once() -> None:
    receiver = DtmfReceiver()
    digits = feed(receiver, DtmfSender().packets("7", 120, timestamp=5000))
    assert digits == [DtmfDigit("7", 5000, 960, ended=True)]
    assert receiver.flush(now=10.0) == []
    assert receiver.close() == []


def test_receiver_reports_on_the_first_end_packet() -> None:
    receiver = DtmfReceiver()
    packets = DtmfSender().packets("1", 60, timestamp=0)
    results = [receiver.receive(TelephoneEvent.parse(p.payload), p.timestamp, 0.0) for p in packets]
    assert results == [[], [], [DtmfDigit("1", 0, 480, True)], [], []]


def test_receiver_does_not_need_the_marker_bit() -> None:
    receiver = DtmfReceiver()
    digits = []
    for seq, packet in enumerate(DtmfSender().packets("9", 80, timestamp=320)):
        rtp = RtpPacket(
            payload_type=101, marker=False, sequence_number=seq, timestamp=320, payload=packet.payload
        )
        digits += receiver.receive_packet(RtpPacket.parse(bytes(rtp)), now=packet.offset_ms / 1000)
    assert digits == [DtmfDigit("9", 320, 640, True)]


def test_receiver_survives_lost_start_packets() -> None:
    packets = DtmfSender().packets("3", 100, timestamp=160)
    assert feed(DtmfReceiver(), packets[2:]) == [DtmfDigit("3", 160, 800, True)]
    assert feed(DtmfReceiver(), packets[4:]) == [DtmfDigit("3", 160, 800, True)]  # end packets only


def test_receiver_flushes_after_lost_end_packets() -> None:
    receiver = DtmfReceiver(timeout=0.3)
    packets = DtmfSender().packets("*", 100, timestamp=0)
    assert feed(receiver, packets[:4]) == []  # last update at 60 ms
    assert receiver.flush(now=0.3) == []
    assert receiver.flush(now=0.36) == [DtmfDigit("*", 0, 640, ended=False)]
    assert receiver.flush(now=1.0) == []
    # The end packets finally show up: already reported, so dropped.
    assert feed(receiver, packets[4:], start=0.4) == []


def test_receiver_reports_unended_digit_when_next_event_starts() -> None:
    receiver = DtmfReceiver()
    first = DtmfSender().packets("1", 100, timestamp=0)[:4]
    second = DtmfSender().packets("2", 100, timestamp=2400)
    digits = feed(receiver, first) + feed(receiver, second, start=0.3)
    assert digits == [DtmfDigit("1", 0, 640, ended=False), DtmfDigit("2", 2400, 800, ended=True)]


def test_same_digit_twice_is_two_digits() -> None:
    receiver = DtmfReceiver()
    sender = DtmfSender()
    digits = feed(receiver, sender.packets("5", 100, 0)) + feed(receiver, sender.packets("5", 100, 1600), 0.2)
    assert [(d.digit, d.timestamp) for d in digits] == [("5", 0), ("5", 1600)]


def test_all_sixteen_digits_in_sequence() -> None:
    receiver = DtmfReceiver()
    sender = DtmfSender()
    digits = []
    for i, digit in enumerate(DTMF_DIGITS):
        digits += feed(receiver, sender.packets(digit, 80, timestamp=(i * 2000) & 0xFFFFFFFF), start=i * 0.25)
    assert "".join(d.digit for d in digits) == DTMF_DIGITS
    assert all(d.ended and d.duration == 640 for d in digits)


def test_reordered_update_after_end_is_dropped() -> None:
    receiver = DtmfReceiver()
    packets = DtmfSender().packets("0", 100, timestamp=8000)
    order = [0, 1, 2, 4, 3, 5, 6]
    assert feed(receiver, [packets[i] for i in order]) == [DtmfDigit("0", 8000, 800, True)]


def test_timestamp_wrap_between_digits() -> None:
    receiver = DtmfReceiver()
    sender = DtmfSender()
    digits = feed(receiver, sender.packets("1", 60, 0xFFFFFF00)) + feed(
        receiver, sender.packets("2", 60, 0x100), 0.2
    )
    assert [(d.digit, d.timestamp) for d in digits] == [("1", 0xFFFFFF00), ("2", 0x100)]


def test_long_event_segments_are_one_digit() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(TelephoneEvent(5, duration=0xFF00), 1000, 8.0) == []
    assert receiver.receive(TelephoneEvent(5, duration=0xFFFF), 1000, 8.2) == []
    # RFC 4733 2.5.1.3: the next segment starts at the old timestamp plus the old segment's duration.
    assert receiver.receive(TelephoneEvent(5, duration=800), 1000 + 0xFFFF, 8.3) == []
    assert receiver.receive(TelephoneEvent(5, end=True, duration=1600), 1000 + 0xFFFF, 8.4) == [
        DtmfDigit("5", 1000, 0xFFFF + 1600, True)
    ]
    assert receiver.receive(TelephoneEvent(5, end=True, duration=1600), 1000 + 0xFFFF, 8.5) == []


def test_non_digit_events_are_ignored() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(TelephoneEvent(16, duration=160), 0, 0.0) == []
    assert receiver.receive(TelephoneEvent(16, end=True, duration=800), 0, 0.1) == []
    assert receiver.close() == []


def test_close_reports_pending_digit() -> None:
    receiver = DtmfReceiver()
    receiver.receive(TelephoneEvent(14, duration=320), 40, 0.0)
    assert receiver.close() == [DtmfDigit("C", 40, 320, ended=False)]
    assert receiver.close() == []
