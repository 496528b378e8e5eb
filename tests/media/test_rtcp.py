from pathlib import Path

import pytest

from activecall.media.rtcp import (
    NTP_UNIX_EPOCH_OFFSET,
    RTCP_APP,
    SDES_CNAME,
    SDES_NAME,
    RtcpByePacket,
    RtcpError,
    RtcpPacket,
    RtcpReportBlock,
    RtcpRrPacket,
    RtcpSdesChunk,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtcpUnknownPacket,
    RtpStats,
    ntp_from_unix,
    ntp_middle32,
    ntp_to_unix,
    parse_compound,
    round_trip_time,
    seconds_to_dlsr,
    serialize_compound,
)

VECTORS = Path(__file__).parent / "vectors"


def load(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_sr_sdes_bye_vector() -> None:
    data = load("rtcp_sr_sdes_bye.bin")
    sr, sdes, bye = parse_compound(data)
    assert sr == RtcpSrPacket(
        ssrc=0x01020304,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=0xE24C3A2B80000000, rtp_timestamp=8000, packet_count=100, octet_count=16000
        ),
        reports=[
            RtcpReportBlock(
                ssrc=0x0A0B0C0D,
                fraction_lost=64,
                packets_lost=5,
                highest_sequence=0x0001002A,
                jitter=18,
                lsr=0x4C3A2B80,
                dlsr=0x00018000,
            )
        ],
    )
    assert isinstance(sdes, RtcpSdesPacket)
    assert sdes.chunks == [RtcpSdesChunk(0x01020304, [(SDES_CNAME, b"ac@10.0.0.1")])]
    assert sdes.chunks[0].cname == "ac@10.0.0.1"
    assert bye == RtcpByePacket(sources=[0x01020304], reason=b"call end")
    assert serialize_compound([sr, sdes, bye]) == data


def test_build_sr_sdes_bye_vector_from_fields() -> None:
    sr = RtcpSrPacket(
        0x01020304,
        RtcpSenderInfo(0xE24C3A2B80000000, 8000, 100, 16000),
        [RtcpReportBlock(0x0A0B0C0D, 64, 5, 0x0001002A, 18, 0x4C3A2B80, 0x00018000)],
    )
    packets: list[RtcpPacket] = [
        sr,
        RtcpSdesPacket.with_cname(0x01020304, "ac@10.0.0.1"),
        RtcpByePacket([0x01020304], b"call end"),
    ]
    assert serialize_compound(packets) == load("rtcp_sr_sdes_bye.bin")


def test_rr_vector_with_signed_and_extreme_report_fields() -> None:
    data = load("rtcp_rr_sdes.bin")
    rr, sdes = parse_compound(data)
    assert isinstance(rr, RtcpRrPacket)
    assert rr.ssrc == 0x11223344
    first, second = rr.reports
    assert first.packets_lost == -2  # duplicates outnumber losses
    assert first.highest_sequence == 0xFFFF
    assert (second.fraction_lost, second.packets_lost) == (255, 0x7FFFFF)
    assert (second.highest_sequence, second.jitter) == (0x00030010, 1000)
    assert (second.lsr, second.dlsr) == (0x12345678, 0xFFFF)
    assert isinstance(sdes, RtcpSdesPacket)
    assert sdes.chunks[0].items == [(SDES_CNAME, b"carol"), (SDES_NAME, b"Bob")]
    assert bytes(rr) + bytes(sdes) == data


def test_empty_rr_unknown_app_and_bye_without_reason() -> None:
    data = load("rtcp_rr_app_bye.bin")
    rr, app, bye = parse_compound(data)
    assert rr == RtcpRrPacket(ssrc=0x11223344, reports=[])
    assert app == RtcpUnknownPacket(
        RTCP_APP, 2, bytes.fromhex("11223344") + b"name" + bytes.fromhex("deadbeef")
    )
    assert bye == RtcpByePacket(sources=[0x11223344, 0x55667788], reason=None)
    assert serialize_compound([rr, app, bye]) == data


def test_report_block_negative_loss_serialises_as_24_bit_twos_complement() -> None:
    block = RtcpReportBlock(ssrc=1, packets_lost=-0x800000)
    assert bytes(block)[4:8] == bytes.fromhex("00800000")
    assert RtcpReportBlock.parse(bytes(block)).packets_lost == -0x800000
    with pytest.raises(RtcpError, match="does not fit 24 signed bits"):
        bytes(RtcpReportBlock(ssrc=1, packets_lost=0x800000))


def test_sdes_chunk_padding_at_each_alignment() -> None:
    for length in range(9):
        packet = RtcpSdesPacket([RtcpSdesChunk(7, [(SDES_CNAME, b"x" * length)])])
        data = bytes(packet)
        assert len(data) % 4 == 0
        # ssrc + type + length + text + at least one null octet, rounded up to a word
        assert len(data) == 4 + ((4 + 2 + length + 1 + 3) // 4) * 4
        assert parse_compound(data) == [packet]


def test_sdes_with_two_chunks_round_trips() -> None:
    packet = RtcpSdesPacket([RtcpSdesChunk(1, [(SDES_CNAME, b"abc")]), RtcpSdesChunk(2, [])])
    data = bytes(packet)
    assert data == bytes.fromhex("82ca0005" + "00000001" + "0103616263" + "000000" + "00000002" + "00000000")
    assert parse_compound(data) == [packet]


def test_padding_on_the_last_packet_is_stripped() -> None:
    padded_rr = bytes.fromhex("a0c90002" + "11223344" + "00000004")
    assert parse_compound(padded_rr) == [RtcpRrPacket(0x11223344)]


@pytest.mark.parametrize(
    ("hex_data", "message"),
    [
        ("", "RTCP packet is empty"),
        ("80c900", "RTCP header at offset 0 is truncated"),
        ("40c9000111223344", "RTCP packet has version 1, expected 2"),
        ("80c9000211223344", "RTCP packet type 201 of 12 bytes is truncated"),
        ("81c9000111223344", "RTCP RR with 1 report blocks is truncated"),
        ("80c800011122334400000000", "RTCP SR with 0 report blocks is truncated"),
        (
            "a0c9000111223344" + "80c9000111223344",
            "RTCP padding is only allowed on the last packet of a compound",
        ),
        ("a0c9000111223300", "RTCP padding count is 0 or exceeds the packet"),
        ("a0c9000111223309", "RTCP padding count is 0 or exceeds the packet"),
        ("81ca000111223344", "RTCP SDES chunk has no terminating null item"),
        ("81ca00021122334401090000", "RTCP SDES item type 1 is truncated"),
        ("82ca00021122334401000000", "RTCP SDES chunk is truncated in its SSRC"),
        ("82cb000111223344", "RTCP BYE with 2 sources is truncated"),
        ("81cb00021122334405616263", "RTCP BYE reason is truncated"),
        ("80c9000111223344" + "80", "RTCP header at offset 8 is truncated"),
    ],
)
def test_malformed_compounds_raise_precise_errors(hex_data: str, message: str) -> None:
    with pytest.raises(RtcpError) as info:
        parse_compound(bytes.fromhex(hex_data))
    assert str(info.value) == message


def test_unserialisable_packets_raise() -> None:
    with pytest.raises(RtcpError, match="cannot carry 32 items"):
        bytes(RtcpRrPacket(1, [RtcpReportBlock(ssrc) for ssrc in range(32)]))
    with pytest.raises(RtcpError, match="SDES item type 0 with 1 bytes cannot be encoded"):
        bytes(RtcpSdesPacket([RtcpSdesChunk(1, [(0, b"x")])]))
    with pytest.raises(RtcpError, match="BYE reason of 256 bytes does not fit"):
        bytes(RtcpByePacket([1], b"x" * 256))


def test_ntp_helpers() -> None:
    assert ntp_from_unix(0.0) == NTP_UNIX_EPOCH_OFFSET << 32
    assert ntp_from_unix(1.5) == ((NTP_UNIX_EPOCH_OFFSET + 1) << 32) | 0x80000000
    assert ntp_to_unix(((NTP_UNIX_EPOCH_OFFSET + 10) << 32) | 0x40000000) == 10.25
    assert ntp_middle32(0xE24C3A2B80000000) == 0x3A2B8000
    assert seconds_to_dlsr(1.5) == 0x18000
    assert seconds_to_dlsr(-1.0) == 0


def test_round_trip_time_from_lsr_and_dlsr() -> None:
    sent = ntp_from_unix(1000.0)
    arrival = ntp_from_unix(1000.0 + 0.25 + 1.5)  # 250 ms on the wire, 1.5 s held by the peer
    assert round_trip_time(arrival, ntp_middle32(sent), seconds_to_dlsr(1.5)) == 0.25
    assert round_trip_time(arrival, 0, 0) is None
    assert round_trip_time(sent, ntp_middle32(arrival), 0) is None


def feed(stats: RtpStats, seqs: list[int], start_time: float = 0.0) -> None:
    for i, seq in enumerate(seqs):
        stats.update(seq, (seq * 160) & 0xFFFFFFFF, start_time + i * 0.02)


def test_stats_in_order_stream() -> None:
    stats = RtpStats(8000)
    feed(stats, list(range(1000, 1100)))
    block = stats.report_block(ssrc=5, now=2.0)
    assert (stats.expected, stats.received, stats.cumulative_lost) == (100, 100, 0)
    assert block == RtcpReportBlock(ssrc=5, fraction_lost=0, packets_lost=0, highest_sequence=1099, jitter=0)


def test_stats_loss_and_fraction_per_interval() -> None:
    stats = RtpStats(8000)
    feed(stats, [s for s in range(100) if s not in (5, 7)])
    first = stats.report_block(ssrc=5, now=2.0)
    assert (first.packets_lost, first.fraction_lost) == (2, (2 << 8) // 100)
    feed(stats, [s for s in range(100, 150) if s % 5], start_time=2.0)  # 10 of 50 lost
    second = stats.report_block(ssrc=5, now=3.0)
    assert (second.packets_lost, second.fraction_lost) == (12, (10 << 8) // 50)
    assert second.highest_sequence == 149
    third = stats.report_block(ssrc=5, now=3.5)  # nothing new: no loss in an empty interval
    assert third.fraction_lost == 0


def test_stats_sequence_wrap_extends_highest_sequence() -> None:
    stats = RtpStats(8000)
    feed(stats, [(65530 + i) & 0xFFFF for i in range(20)])
    assert stats.cycles == 1 << 16
    assert stats.report_block(ssrc=1, now=1.0).highest_sequence == 0x0001000D
    assert stats.expected == 20


def test_stats_duplicates_make_cumulative_loss_negative() -> None:
    stats = RtpStats(8000)
    feed(stats, [1, 2, 2, 3, 3, 4])
    assert stats.report_block(ssrc=1, now=1.0).packets_lost == -2


def test_stats_reordering_counts_no_loss() -> None:
    stats = RtpStats(8000)
    feed(stats, [1, 3, 2, 4, 6, 5])
    assert (stats.expected, stats.cumulative_lost, stats.max_seq) == (6, 0, 6)


def test_stats_big_jump_needs_confirmation() -> None:
    stats = RtpStats(8000)
    feed(stats, [10, 11, 12])
    stats.update(30000, 0, 1.0)  # a stray packet: discarded
    assert (stats.received, stats.max_seq) == (3, 12)
    stats.update(13, 13 * 160, 1.02)
    stats.update(40000, 0, 1.04)
    stats.update(40001, 160, 1.06)  # confirmed: the source restarted its sequence
    assert (stats.base_seq, stats.max_seq, stats.received, stats.expected) == (40001, 40001, 1, 1)


def test_interarrival_jitter_follows_rfc3550_a8() -> None:
    stats = RtpStats(8000)
    # transit (timestamp units): 0, 0, 80, 0 -> |D| = 0, 80, 80 -> J = 0, 5, 9.6875
    for seq, arrival in [(0, 0.0), (1, 0.02), (2, 0.05), (3, 0.06)]:
        stats.update(seq, seq * 160, arrival)
    assert stats.jitter == 9


def test_jitter_across_timestamp_wrap() -> None:
    stats = RtpStats(8000)
    for i in range(10):
        stats.update(i, (0xFFFFFF00 + i * 160) & 0xFFFFFFFF, i * 0.02)
    assert stats.jitter == 0


def test_lsr_and_dlsr_from_last_sender_report() -> None:
    stats = RtpStats(8000)
    feed(stats, [1, 2, 3])
    stats.on_sender_report(0xE24C3A2B80000000, arrival_time=10.0)
    block = stats.report_block(ssrc=1, now=11.5)
    assert (block.lsr, block.dlsr) == (0x3A2B8000, 0x18000)
