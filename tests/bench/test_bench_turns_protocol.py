"""The bench caller's protocol code: G.711, RTP, SRTP, SDP and SIP messages."""

from __future__ import annotations

import numpy as np
import pytest

from turns import g711
from turns.rtp import (
    PCMU,
    Srtp,
    build_rtp,
    inline_key,
    is_rtcp,
    key_from_inline,
    new_key,
    parse_rtp,
)
from turns.sip import Dialog, parse, parse_sdp_answer, response, sdp_offer, split_stream


def test_mulaw_known_values_and_round_trip() -> None:
    assert g711.encode(np.array([0], dtype=np.int16)) == b"\xff"
    assert g711.decode(b"\xff\x7f\x00\x80").tolist() == [0, 0, -32124, 32124]
    ramp = np.arange(-32768, 32768, 7, dtype=np.int32).astype(np.int16)
    back = g711.decode(g711.encode(ramp)).astype(np.int32)
    # mu-law keeps the error within about 1/16 of the magnitude (plus the smallest step).
    assert np.all(np.abs(back - ramp) <= np.abs(ramp.astype(np.int32)) / 16 + 8)
    assert g711.encode(g711.decode(bytes(range(256)))) == bytes(b if b != 0x7F else 0xFF for b in range(256))


def test_rtp_build_and_parse() -> None:
    packet = build_rtp(PCMU, 65535, 2**32 - 1, 0xDEADBEEF, b"\x01" * 160, marker=True)
    assert len(packet) == 172 and packet[0] == 0x80 and packet[1] == 0x80
    parsed = parse_rtp(packet)
    assert (parsed.payload_type, parsed.sequence, parsed.timestamp, parsed.ssrc, parsed.marker) == (
        0, 65535, 2**32 - 1, 0xDEADBEEF, True,
    )  # fmt: skip
    assert parsed.payload == b"\x01" * 160
    # One CSRC, a header extension of one word, two bytes of padding.
    extended = bytes([0xB1, 101]) + packet[2:12] + b"\0\0\0\1" + b"\xbe\xde\0\1" + b"abcd" + b"xy\0\2"
    assert parse_rtp(extended).payload == b"xy" and parse_rtp(extended).payload_type == 101
    with pytest.raises(ValueError):
        parse_rtp(b"\x40" + packet[1:])
    assert not is_rtcp(packet) and is_rtcp(bytes([0x80, 200]) + bytes(6))


def test_srtp_round_trip_and_tamper() -> None:
    key = new_key()
    sender, receiver = (
        Srtp(key, outbound=True),
        Srtp(key_from_inline(f"inline:{inline_key(key)}|2^31"), outbound=False),
    )
    plain = build_rtp(PCMU, 7, 1600, 1234, g711.encode(np.full(160, 1000, dtype=np.int16)))
    protected = sender.protect(plain)
    assert len(protected) == len(plain) + 10 and protected[12:] != plain[12:]
    assert receiver.unprotect(protected) == plain
    second = sender.protect(build_rtp(PCMU, 8, 1760, 1234, b"\xff" * 160))
    tampered = second[:20] + bytes([second[20] ^ 1]) + second[21:]
    with pytest.raises(Exception):  # noqa: B017 - pylibsrtp raises its own Error on a bad tag
        receiver.unprotect(tampered)
    with pytest.raises(Exception):  # noqa: B017 - a replay of a packet already taken
        receiver.unprotect(protected)
    with pytest.raises(ValueError):
        key_from_inline("inline:AAAA")


def test_sdp_offer_and_answer() -> None:
    offer = sdp_offer("127.0.0.1", 40000, "KEY", session_id=5)
    lines = offer.split("\r\n")
    assert "m=audio 40000 RTP/SAVP 0 101" in lines and "a=rtpmap:101 telephone-event/8000" in lines
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:KEY" in lines and "c=IN IP4 127.0.0.1" in lines
    answer = parse_sdp_answer(
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
        "m=audio 30002 RTP/SAVP 0 101\r\nc=IN IP4 127.0.0.1\r\na=rtcp-mux\r\n"
        "a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:SHORT\r\n"
        "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:LONG|2^20\r\n"
    )
    assert (answer.address, answer.port, answer.payload_types) == ("127.0.0.1", 30002, (0, 101))
    assert answer.crypto_inline == "LONG|2^20" and answer.rtcp_mux
    with pytest.raises(ValueError):
        parse_sdp_answer("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 0\r\n")


def test_sip_invite_ack_bye_and_responses() -> None:
    dialog = Dialog("127.0.0.1", 50000, "127.0.0.1:5061", "bench-1")
    data, branch_id = dialog.invite("v=0\r\n")
    invite = parse(data)
    assert invite.start == "INVITE sip:bench@127.0.0.1:5061;transport=tls SIP/2.0"
    assert branch_id in invite.header("Via") and invite.header("Via").startswith(
        "SIP/2.0/TLS 127.0.0.1:50000"
    )
    assert invite.header("CSeq") == "1 INVITE" and invite.header("Content-Length") == "5"
    assert invite.body == "v=0\r\n" and invite.header("Content-Type") == "application/sdp"

    ok = parse(
        b"SIP/2.0 200 OK\r\nVia: " + invite.header("Via").encode() + b"\r\nTo: <sip:bench@x>;tag=abc\r\n"
        b"f: " + invite.header("From").encode() + b"\r\ni: " + dialog.call_id.encode() + b"\r\n"
        b"CSeq: 1 INVITE\r\nRecord-Route: <sip:p1;lr>\r\nRecord-Route: <sip:p2;lr>\r\n"
        b"m: <sip:edge@127.0.0.1:5061;transport=tls>\r\nl: 0\r\n\r\n"
    )
    assert ok.status == 200 and ok.cseq_method == "INVITE" and ok.header("Call-ID") == dialog.call_id
    dialog.established(ok)
    assert dialog.to_tag == "abc" and dialog.remote_target == "sip:edge@127.0.0.1:5061;transport=tls"
    assert dialog.route == ["<sip:p2;lr>", "<sip:p1;lr>"]
    ack = parse(dialog.ack())
    assert (
        ack.start.startswith("ACK sip:edge@")
        and ack.header("CSeq") == "1 ACK"
        and ";tag=abc" in ack.header("To")
    )
    bye = parse(dialog.bye())
    assert bye.method == "BYE" and bye.header("CSeq") == "2 BYE" and bye.all("Route") == dialog.route

    their_bye = parse(
        b"BYE sip:bench-1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS e;branch=z9hG4bKx\r\n"
        b"From: <sip:bench@e>;tag=abc\r\nTo: <sip:b@c>;tag=def\r\nCall-ID: c1\r\n"
        b"CSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    answer = parse(response(their_bye, 200, "OK"))
    assert answer.start == "SIP/2.0 200 OK" and answer.header("CSeq") == "9 BYE"
    assert answer.header("Via") == "SIP/2.0/TLS e;branch=z9hG4bKx" and answer.header("Call-ID") == "c1"


def test_stream_framing() -> None:
    one = b"SIP/2.0 100 Trying\r\nContent-Length: 0\r\n\r\n"
    two = b"SIP/2.0 200 OK\r\nl: 4\r\n\r\nbody"
    messages, rest = split_stream(b"\r\n\r\n" + one + two + two[:10])
    assert messages == [one, two] and rest == two[:10]
    messages, rest = split_stream(rest + two[10:])
    assert messages == [two] and rest == b""
    messages, rest = split_stream(two[:-1])
    assert messages == [] and rest == two[:-1]
