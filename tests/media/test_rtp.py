from pathlib import Path

import pytest

from activecall.media.rtp import (
    RtpError,
    RtpPacket,
    is_rtcp,
    seq_delta,
    timestamp_delta,
    uint16_add,
    uint16_gt,
    uint16_gte,
    uint32_add,
    uint32_gt,
)

VECTORS = Path(__file__).parent / "vectors"


def load(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_parse_csrc_vector() -> None:
    data = load("rtp_csrc.bin")
    packet = RtpPacket.parse(data)
    assert packet.version == 2
    assert packet.marker is True
    assert packet.payload_type == 0
    assert packet.sequence_number == 0x1234
    assert packet.timestamp == 0x0A0B
    assert packet.ssrc == 0xDEADBEEF
    assert packet.csrc == [0x11111111, 0x22222222]
    assert packet.extension is False
    assert packet.padding is False
    assert packet.payload == b"\xff\xfe\xfd\xfc"
    assert bytes(packet) == data


def test_parse_extension_vector() -> None:
    data = load("rtp_extension.bin")
    packet = RtpPacket.parse(data)
    assert (packet.marker, packet.payload_type) == (False, 8)
    assert packet.sequence_number == 0xFFFF
    assert packet.timestamp == 0xFFFFFFFF
    assert packet.csrc == []
    assert packet.extension_profile == 0xBEDE
    assert packet.extension_data == b"\x10\x01\x00\x00"
    assert packet.payload == b"\xd5\xd5\xd5"
    assert bytes(packet) == data


def test_parse_padding_vector_strips_padding() -> None:
    data = load("rtp_padding.bin")
    packet = RtpPacket.parse(data)
    assert (packet.marker, packet.payload_type) == (True, 101)
    assert packet.padding_size == 4
    assert packet.payload == bytes.fromhex("018a0320")
    assert bytes(packet) == data


def test_parse_vector_with_csrc_extension_and_padding() -> None:
    data = load("rtp_all.bin")
    packet = RtpPacket.parse(data)
    assert packet.csrc == [2]
    assert packet.extension_profile == 0x1000
    assert packet.extension_data == bytes(range(1, 9))
    assert packet.padding_size == 2
    assert packet.payload == b"\x7f\x80"
    assert (packet.sequence_number, packet.timestamp, packet.ssrc) == (0x8000, 0x80000000, 1)
    assert bytes(packet) == data


def test_build_matches_hand_built_bytes() -> None:
    packet = RtpPacket(payload_type=0, marker=True, sequence_number=0x1234, timestamp=0x0A0B, ssrc=0xDEADBEEF)
    packet.csrc = [0x11111111, 0x22222222]
    packet.payload = b"\xff\xfe\xfd\xfc"
    assert bytes(packet) == load("rtp_csrc.bin")


def test_build_padding_is_optional() -> None:
    plain = RtpPacket(payload_type=8, sequence_number=7, timestamp=160, ssrc=9, payload=b"\xd5" * 3)
    padded = RtpPacket(
        payload_type=8, sequence_number=7, timestamp=160, ssrc=9, payload=b"\xd5" * 3, padding_size=5
    )
    assert bytes(plain) == bytes.fromhex("80080007000000a000000009d5d5d5")
    assert bytes(padded) == bytes.fromhex("a0080007000000a000000009d5d5d50000000005")
    assert RtpPacket.parse(bytes(padded)) == padded


def test_empty_extension_round_trip() -> None:
    packet = RtpPacket(payload_type=0, extension_profile=0xBEDE, payload=b"x")
    data = bytes(packet)
    assert data[0] == 0x90
    assert data[12:16] == b"\xbe\xde\x00\x00"
    assert RtpPacket.parse(data) == packet


@pytest.mark.parametrize(
    ("hex_data", "message"),
    [
        ("8000000100000002000000", "RTP packet length 11 is less than 12 bytes"),
        ("400000010000000200000003", "RTP packet has version 1, expected 2"),
        ("c00000010000000200000003", "RTP packet has version 3, expected 2"),
        ("82000001000000020000000311111111", "RTP packet is truncated in its 2 CSRC identifiers"),
        ("90000001000000020000000301", "RTP packet is truncated in its header extension header"),
        ("900000010000000200000003bede0002aaaaaaaa", "RTP header extension of 2 words is truncated"),
        ("a00000010000000200000003ffff00", "RTP padding bit is set but the padding count is 0"),
        ("a00000010000000200000003ff0a", "RTP padding count 10 exceeds the packet"),
        # The padding eats the CSRC list the header announces.
        ("a1000001000000020000000300000004", "RTP packet is truncated in its 1 CSRC identifiers"),
    ],
)
def test_malformed_packets_raise_precise_errors(hex_data: str, message: str) -> None:
    with pytest.raises(RtpError) as info:
        RtpPacket.parse(bytes.fromhex(hex_data))
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (RtpPacket(payload_type=128), "RTP payload type 128 is outside 0..127"),
        (RtpPacket(csrc=list(range(16))), "RTP packet has 16 CSRCs, at most 15 fit"),
        (
            RtpPacket(extension_profile=1, extension_data=b"abc"),
            "RTP header extension length is not a multiple of 4 bytes",
        ),
        (RtpPacket(padding_size=256), "RTP padding size 256 is outside 0..255"),
    ],
)
def test_unserialisable_packets_raise(packet: RtpPacket, message: str) -> None:
    with pytest.raises(RtpError, match=f"^{message}$"):
        bytes(packet)


def test_every_truncation_of_a_vector_is_rejected() -> None:
    data = load("rtp_all.bin")
    for length in range(len(data)):
        with pytest.raises(RtpError):
            RtpPacket.parse(data[:length])


def test_uint16_helpers_wrap() -> None:
    assert uint16_add(0xFFFF, 1) == 0
    assert uint16_add(0xFFFE, 5) == 3
    assert uint16_gt(0, 0xFFFF)
    assert uint16_gt(10, 5)
    assert not uint16_gt(5, 10)
    assert not uint16_gt(0xFFFF, 0)
    assert not uint16_gt(7, 7)
    assert uint16_gte(7, 7)
    assert uint16_gt(0x8004, 5)  # 32767 ahead
    assert not uint16_gt(0x8006, 5)  # 32769 ahead reads as behind
    assert seq_delta(0, 0xFFFF) == 1
    assert seq_delta(0xFFFF, 0) == -1
    assert seq_delta(100, 90) == 10
    assert seq_delta(0x8000, 0) == -0x8000
    assert seq_delta(0x7FFF, 0) == 0x7FFF


def test_uint32_helpers_wrap() -> None:
    assert uint32_add(0xFFFFFFFF, 161) == 160
    assert uint32_gt(159, 0xFFFFFF00)
    assert not uint32_gt(0xFFFFFF00, 159)
    assert timestamp_delta(159, 0xFFFFFF00) == 415
    assert timestamp_delta(0, 160) == -160


@pytest.mark.parametrize(
    ("second_octet", "expected"),
    [
        (200, True),  # SR
        (201, True),  # RR
        (202, True),  # SDES
        (203, True),  # BYE
        (192, True),
        (223, True),
        (0x80 | 0, False),  # PCMU with marker
        (0, False),
        (8, False),
        (101, False),  # telephone-event
        (0x80 | 101, False),
        (224, False),
        (191, False),
    ],
)
def test_is_rtcp_demultiplexes_by_payload_type_range(second_octet: int, expected: bool) -> None:
    assert is_rtcp(bytes((0x80, second_octet, 0, 1))) is expected


def test_is_rtcp_on_vectors() -> None:
    assert is_rtcp(load("rtcp_sr_sdes_bye.bin"))
    assert is_rtcp(load("rtcp_rr_app_bye.bin"))
    assert not is_rtcp(load("rtp_padding.bin"))
    assert not is_rtcp(b"\x80")


def test_a_plain_packet_parses_as_the_general_path_would() -> None:
    packet = RtpPacket(
        payload_type=0, marker=True, sequence_number=65535, timestamp=2**32 - 1, ssrc=7, payload=b"x"
    )
    parsed = RtpPacket.parse(bytes(packet))
    assert parsed == packet
    assert parsed.csrc == [] and parsed.csrc is not RtpPacket.parse(bytes(packet)).csrc
