"""SDP parsing and offer/answer: golden descriptions from Twilio, baresip and the RFCs."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from activecall.sip_edge.sip.syntax.sdp import (
    G722,
    PCMA,
    PCMU,
    SUITE_AES_CM_128_HMAC_SHA1_32,
    SUITE_AES_CM_128_HMAC_SHA1_80,
    Answer,
    Attribute,
    Codec,
    Connection,
    CryptoAttribute,
    Direction,
    MediaDescription,
    NegotiationError,
    Origin,
    RtcpAttribute,
    RtpMap,
    SdpError,
    SdpParseError,
    SessionDescription,
    SrtpMode,
    build_offer,
    generate_crypto,
    negotiate_answer,
    process_answer,
    update_answer,
)


def sdp(*lines: str) -> str:
    return "".join(line + "\r\n" for line in lines)


# What Twilio Elastic SIP Trunking offers on a Secure Trunking call (see INTEROP.md).
TWILIO_KEY = "5A6xLtgqUqaA/nhPY1O1ZMgS4dOp5JavNObLjVQ7"
TWILIO_OFFER = sdp(
    "v=0",
    "o=root 1867459012 1867459012 IN IP4 168.86.128.61",
    "s=Twilio Media Gateway",
    "c=IN IP4 168.86.128.61",
    "t=0 0",
    "m=audio 17318 RTP/SAVP 0 8 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:20",
    "a=sendrecv",
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{TWILIO_KEY}",
)

# Captured from baresip 1.0.0 (mediaenc=srtp-mand, rtcp_mux yes, modules opus, g722, g711).
BARESIP_KEY = "/Jea1c2MmdUUXLb64ZuU0rgnCe38WIJ8+D7D5gP9"
BARESIP_OFFER = sdp(
    "v=0",
    "o=- 3491893959 1904389830 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "a=tool:baresip 1.0.0",
    "m=audio 44612 RTP/SAVP 96 9 0 8 101",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 stereo=1;sprop-stereo=1",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=sendrecv",
    "a=label:1",
    "a=rtcp-rsize",
    "a=ssrc:815808629 cname:sip:caller@127.0.0.1",
    "a=rtcp-mux",
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{BARESIP_KEY}",
    "a=minptime:20",
    "a=ptime:20",
)

# RFC 8866 section 5, the example session description.
RFC8866_EXAMPLE = sdp(
    "v=0",
    "o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1",
    "s=Call to John Smith",
    "i=SDP Offer #1",
    "u=http://www.jdoe.example.com/home.html",
    "e=Jane Doe <jane@jdoe.example.com>",
    "p=+1 617 555-6011",
    "c=IN IP4 198.51.100.1",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0",
    "m=audio 49180 RTP/AVP 0",
    "m=video 51372 RTP/AVP 99",
    "c=IN IP6 2001:db8::2",
    "a=rtpmap:99 h263-1998/90000",
)

LOCAL_IP = "203.0.113.10"
LOCAL_PORT = 40000
LOCAL_KEY_SALT = bytes(range(30))
LOCAL_KEY_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"


def local_crypto(tag: int, suite: str) -> CryptoAttribute:
    return CryptoAttribute(tag, suite, LOCAL_KEY_SALT)


def answer(offer: str, **kwargs: object) -> Answer:
    params: dict[str, object] = {"local_crypto_factory": local_crypto, "session_id": 4242}
    params.update(kwargs)
    return negotiate_answer(SessionDescription.parse(offer), LOCAL_IP, LOCAL_PORT, **params)  # type: ignore[arg-type]


def refused(offer: str, **kwargs: object) -> NegotiationError:
    with pytest.raises(NegotiationError) as info:
        answer(offer, **kwargs)
    assert info.value.status == 488
    return info.value


ANSWER_HEAD = ("v=0", "o=- 4242 4242 IN IP4 203.0.113.10", "s=-", "c=IN IP4 203.0.113.10", "t=0 0")
PCMU_TE_LINES = (
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:20",
)


# --- Parsing and serialization ----------------------------------------------------------------


@pytest.mark.parametrize("text", [TWILIO_OFFER, BARESIP_OFFER, RFC8866_EXAMPLE])
def test_round_trip_is_exact(text: str) -> None:
    parsed = SessionDescription.parse(text)
    assert str(parsed) == text
    assert bytes(parsed) == text.encode()
    assert str(SessionDescription.parse(text.encode())) == text


def test_twilio_offer_fields() -> None:
    offer = SessionDescription.parse(TWILIO_OFFER)
    assert offer.origin == Origin("root", "1867459012", 1867459012, "168.86.128.61")
    assert offer.session_name == "Twilio Media Gateway"
    assert offer.connection == Connection("168.86.128.61")
    (audio,) = offer.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        17318,
        "RTP/SAVP",
        ["0", "8", "101"],
    )
    assert audio.rtpmaps() == [
        RtpMap(0, "PCMU", 8000),
        RtpMap(8, "PCMA", 8000),
        RtpMap(101, "telephone-event", 8000),
    ]
    assert audio.fmtp(101) == "0-16"
    assert audio.fmtp(0) is None
    assert (audio.ptime, audio.maxptime, audio.direction, audio.rtcp_mux) == (
        20,
        20,
        Direction.SENDRECV,
        False,
    )
    (crypto,) = audio.crypto()
    assert (crypto.tag, crypto.suite, crypto.lifetime, crypto.mki) == (
        1,
        SUITE_AES_CM_128_HMAC_SHA1_80,
        None,
        None,
    )
    assert crypto.key_salt == base64.b64decode(TWILIO_KEY)
    assert (len(crypto.key), len(crypto.salt)) == (16, 14)


def test_rfc8866_example_fields() -> None:
    parsed = SessionDescription.parse(RFC8866_EXAMPLE)
    assert parsed.information == "SDP Offer #1"
    assert parsed.emails == ["Jane Doe <jane@jdoe.example.com>"]
    assert parsed.phones == ["+1 617 555-6011"]
    video = parsed.media[2]
    assert video.connection == Connection("2001:db8::2", addrtype="IP6")
    assert parsed.media_connection(parsed.media[0]) == Connection("198.51.100.1")
    assert video.rtpmap(99) == RtpMap(99, "h263-1998", 90000)
    # Static payload types need no rtpmap (RFC 3551 section 6).
    assert parsed.media[0].rtpmaps() == [RtpMap(0, "PCMU", 8000)]


def test_unknown_attributes_and_order_are_kept() -> None:
    parsed = SessionDescription.parse(BARESIP_OFFER)
    assert parsed.attribute_value("tool") == "baresip 1.0.0"
    names = [a.name for a in parsed.media[0].attributes]
    assert names == [
        "rtpmap",
        "fmtp",
        "rtpmap",
        "rtpmap",
        "rtpmap",
        "rtpmap",
        "fmtp",
        "sendrecv",
        "label",
        "rtcp-rsize",
        "ssrc",
        "rtcp-mux",
        "crypto",
        "minptime",
        "ptime",
    ]


def test_bare_lf_is_accepted_and_written_as_crlf() -> None:
    parsed = SessionDescription.parse(TWILIO_OFFER.replace("\r\n", "\n"))
    assert str(parsed) == TWILIO_OFFER


def test_less_common_lines_round_trip() -> None:
    text = sdp(
        "v=0",
        "o=- 1 2 IN IP4 192.0.2.1",
        "s= ",
        "b=AS:128",
        "t=3034423619 3042462419",
        "r=7d 1h 0 25h",
        "t=0 0",
        "z=2882844526 -1h 2898848070 0",
        "k=prompt",
        "a=recvonly",
        "m=audio 49170/2 RTP/AVP 0",
        "i=main audio",
        "c=IN IP4 224.2.1.1/127",
        "b=TIAS:64000",
        "k=prompt",
        "a=rtcp:53020 IN IP4 126.16.64.4",
        "a=empty:",
    )
    parsed = SessionDescription.parse(text)
    assert str(parsed) == text
    assert parsed.timings[0].repeats == ["7d 1h 0 25h"]
    media = parsed.media[0]
    assert (media.port, media.port_count) == (49170, 2)
    assert media.rtcp == RtcpAttribute(53020, Connection("126.16.64.4"))
    assert media.attribute_values("empty") == [""]
    assert parsed.media_direction(media) == Direction.RECVONLY


def test_media_description_parses_alone() -> None:
    media = MediaDescription.parse("m=audio 5004 RTP/AVP 8\r\na=rtcp:5005\r\n")
    assert (media.port, media.formats, media.rtcp) == (5004, ["8"], RtcpAttribute(5005))
    assert str(media) == "m=audio 5004 RTP/AVP 8\r\na=rtcp:5005\r\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "starts with v=0"),
        (sdp("v=1", "o=- 1 1 IN IP4 a", "s=-"), "starts with v=0"),
        (sdp("v=0", "s=-", "t=0 0"), "needs o= and s= lines"),
        (sdp("v=0", "o=- 1 1 IN IP4", "s=-"), "o= needs 6 fields"),
        (sdp("v=0", "o=- 1 x IN IP4 a", "s=-"), "invalid session version: 'x'"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "x=1"), "unexpected x= line at session level"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "c=IN IP4 a", "c=IN IP4 b"), "duplicate c= line at session"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "m=audio x RTP/AVP 0"), "invalid port: 'x'"),
        (
            sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "m=audio 1 RTP/AVP 0", "t=0 0"),
            "unexpected t= line in media",
        ),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "m=audio"), "invalid m= line"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "garbage"), "invalid line: 'garbage'"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "a=bad name"), "invalid attribute"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "b=AS"), "invalid b= line"),
        (sdp("v=0", "o=- 1 1 IN IP4 a", "s=-", "r=1d 1h 0"), "unexpected r= line"),
    ],
)
def test_malformed_descriptions(text: str, message: str) -> None:
    with pytest.raises(SdpParseError, match=message):
        SessionDescription.parse(text)


def test_non_utf8_is_a_parse_error() -> None:
    with pytest.raises(SdpParseError, match="not UTF-8"):
        SessionDescription.parse(b"v=0\r\ns=\xff\r\n")
    assert issubclass(SdpParseError, ValueError) and issubclass(SdpParseError, SdpError)


def test_rtpmap_parse_and_str() -> None:
    assert RtpMap.parse("96 opus/48000/2") == RtpMap(96, "opus", 48000, 2)
    assert str(RtpMap(96, "opus", 48000, 2)) == "96 opus/48000/2"
    with pytest.raises(SdpParseError, match="invalid rtpmap"):
        RtpMap.parse("96 opus")


# --- Direction --------------------------------------------------------------------------------


def test_direction_helpers() -> None:
    assert [d.reversed() for d in Direction] == [
        Direction.SENDRECV,
        Direction.RECVONLY,
        Direction.SENDONLY,
        Direction.INACTIVE,
    ]
    assert Direction.SENDRECV & Direction.SENDONLY == Direction.SENDONLY
    assert Direction.RECVONLY & Direction.SENDONLY == Direction.INACTIVE
    assert Direction.from_flags(sends=False, receives=True) == Direction.RECVONLY


def test_media_direction_overrides_session_direction() -> None:
    text = sdp(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "a=sendonly",
        "m=audio 1000 RTP/AVP 0",
        "m=audio 2000 RTP/AVP 0",
        "a=inactive",
    )
    parsed = SessionDescription.parse(text)
    assert parsed.direction == Direction.SENDONLY
    assert parsed.media[0].direction is None
    assert [parsed.media_direction(m) for m in parsed.media] == [Direction.SENDONLY, Direction.INACTIVE]
    parsed.media[1].set_direction(Direction.RECVONLY)
    assert str(parsed.media[1]) == "m=audio 2000 RTP/AVP 0\r\na=recvonly\r\n"
    parsed.media[0].attributes = [Attribute("ptime", "20"), Attribute("inactive"), Attribute("label", "1")]
    parsed.media[0].set_direction(Direction.SENDRECV)
    assert [str(a) for a in parsed.media[0].attributes] == ["ptime:20", "sendrecv", "label:1"]
    parsed.set_direction(Direction.INACTIVE)
    assert parsed.attributes == [Attribute("inactive")]


# --- Crypto attribute -------------------------------------------------------------------------


def test_rfc4568_crypto_with_lifetime_and_mki() -> None:
    value = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"
    crypto = CryptoAttribute.parse(value)
    assert (crypto.tag, crypto.lifetime, crypto.mki, crypto.usable) == (1, "2^20", "1:4", False)
    assert str(crypto) == value
    assert (
        CryptoAttribute.parse(
            "2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1:4"
        ).mki
        == "1:4"
    )


def test_crypto_session_params_are_kept_but_make_the_line_unusable() -> None:
    value = f"3 AES_CM_128_HMAC_SHA1_80 inline:{TWILIO_KEY} UNENCRYPTED_SRTCP"
    crypto = CryptoAttribute.parse(value)
    assert crypto.session_params == ("UNENCRYPTED_SRTCP",)
    assert str(crypto) == value and not crypto.usable


def test_crypto_repr_hides_the_key() -> None:
    assert TWILIO_KEY not in repr(CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{TWILIO_KEY}"))
    assert "key_salt" not in repr(local_crypto(1, SUITE_AES_CM_128_HMAC_SHA1_80))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1 AES_CM_128_HMAC_SHA1_80", "invalid crypto attribute"),
        ("x AES_CM_128_HMAC_SHA1_80 inline:AAAA", "invalid crypto attribute"),
        ("1 AES_CM_128_HMAC_SHA1_80 uri:http://k", "unsupported crypto key method"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "needs 30 bytes of key and salt, got 3"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", "invalid base64 key"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{TWILIO_KEY};inline:{TWILIO_KEY}", "several keys"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{TWILIO_KEY}|2^20|2^10", "invalid inline key parameters"),
    ],
)
def test_malformed_crypto(value: str, message: str) -> None:
    with pytest.raises(SdpParseError, match=message):
        CryptoAttribute.parse(value)


def test_generate_crypto() -> None:
    first = generate_crypto(1, SUITE_AES_CM_128_HMAC_SHA1_80)
    second = generate_crypto(2, SUITE_AES_CM_128_HMAC_SHA1_32)
    assert (first.tag, first.suite, len(first.key_salt)) == (1, SUITE_AES_CM_128_HMAC_SHA1_80, 30)
    assert (second.tag, second.suite, len(second.key_salt)) == (2, SUITE_AES_CM_128_HMAC_SHA1_32, 30)
    assert first.key_salt != second.key_salt
    assert CryptoAttribute.parse(str(first)) == first
    with pytest.raises(ValueError, match="unsupported SRTP suite"):
        generate_crypto(1, "AES_256_CM_HMAC_SHA1_80")


# --- Answering --------------------------------------------------------------------------------


def test_twilio_offer_answered_exactly() -> None:
    result = answer(TWILIO_OFFER, srtp=SrtpMode.REQUIRED)
    assert str(result.sdp) == sdp(
        *ANSWER_HEAD,
        "m=audio 40000 RTP/SAVP 0 101",
        *PCMU_TE_LINES,
        "a=sendrecv",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{LOCAL_KEY_B64}",
    )
    assert (result.codec, result.payload_type, result.telephone_event_pt, result.ptime) == (PCMU, 0, 101, 20)
    assert (result.remote_address, result.remote_port, result.remote_rtcp_port) == (
        "168.86.128.61",
        17318,
        17319,
    )
    assert (result.rtcp_mux, result.direction, result.srtp, result.media_index) == (
        False,
        Direction.SENDRECV,
        True,
        0,
    )
    assert result.remote_crypto is not None and result.remote_crypto.key_salt == base64.b64decode(TWILIO_KEY)
    assert result.local_crypto == local_crypto(1, SUITE_AES_CM_128_HMAC_SHA1_80)


def test_baresip_offer_answered_exactly() -> None:
    result = answer(BARESIP_OFFER)
    assert str(result.sdp) == sdp(
        *ANSWER_HEAD,
        "m=audio 40000 RTP/SAVP 0 101",
        *PCMU_TE_LINES,
        "a=rtcp-mux",
        "a=sendrecv",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{LOCAL_KEY_B64}",
    )
    assert (result.remote_address, result.remote_port, result.remote_rtcp_port) == ("127.0.0.1", 44612, 44612)
    assert result.rtcp_mux is True
    assert result.remote_crypto is not None
    assert result.remote_crypto.key_salt == base64.b64decode(BARESIP_KEY)


def test_offerer_preference_wins_over_ours() -> None:
    # baresip lists G722 before PCMU: with G722 supported it is chosen, whatever our order.
    result = answer(BARESIP_OFFER, our_codecs=(PCMA, PCMU, G722))
    assert (result.codec.name, result.payload_type, result.telephone_event_pt) == ("G722", 9, 101)
    assert result.sdp.media[0].formats == ["9", "101"]
    assert answer(BARESIP_OFFER, our_codecs=(PCMA, PCMU)).codec == PCMU


def test_telephone_event_must_share_the_codec_clock_rate() -> None:
    opus = Codec("opus", 48000, 111, channels=2)
    result = answer(BARESIP_OFFER, our_codecs=(opus,))
    assert (result.codec, result.telephone_event_pt) == (replace(opus, payload_type=96), None)
    assert result.sdp.media[0].formats == ["96"]
    assert result.sdp.media[0].attribute_values("rtpmap") == ["96 opus/48000/2"]


def test_no_telephone_event_when_not_offered_or_not_wanted() -> None:
    offer = TWILIO_OFFER.replace(" 0 8 101", " 0 8")
    assert answer(offer).telephone_event_pt is None
    result = answer(TWILIO_OFFER, telephone_event=None)
    assert (result.telephone_event_pt, result.sdp.media[0].formats) == (None, ["0"])


def test_rtcp_attribute_gives_the_remote_rtcp_port() -> None:
    offer = TWILIO_OFFER.replace("a=sendrecv\r\n", "a=sendrecv\r\na=rtcp:17400\r\n")
    assert answer(offer).remote_rtcp_port == 17400


def test_offered_ptime_is_reported_and_ours_is_answered() -> None:
    offer = TWILIO_OFFER.replace("a=ptime:20", "a=ptime:30")
    result = answer(offer)
    assert result.ptime == 30
    assert result.sdp.media[0].ptime == 20


def test_multiple_crypto_lines_first_usable_wins() -> None:
    lines = (
        "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:" + "A" * 62 + "==\r\n"
        "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:garbage!\r\n"
        f"a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{TWILIO_KEY}\r\n"
        f"a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{BARESIP_KEY}\r\n"
    )
    offer = TWILIO_OFFER.replace(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{TWILIO_KEY}\r\n", lines)
    result = answer(offer)
    assert result.remote_crypto is not None
    assert (result.remote_crypto.tag, result.remote_crypto.suite) == (3, SUITE_AES_CM_128_HMAC_SHA1_32)
    assert result.sdp.media[0].attribute_values("crypto") == [
        f"3 AES_CM_128_HMAC_SHA1_32 inline:{LOCAL_KEY_B64}"
    ]


PLAIN_OFFER = TWILIO_OFFER.replace("RTP/SAVP", "RTP/AVP").replace(
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{TWILIO_KEY}\r\n", ""
)
BEST_EFFORT_OFFER = TWILIO_OFFER.replace("RTP/SAVP", "RTP/AVP")


def test_plain_rtp_offer() -> None:
    result = answer(PLAIN_OFFER)
    assert str(result.sdp) == sdp(*ANSWER_HEAD, "m=audio 40000 RTP/AVP 0 101", *PCMU_TE_LINES, "a=sendrecv")
    assert (result.srtp, result.local_crypto) == (False, None)


def test_best_effort_srtp_on_rtp_avp() -> None:
    result = answer(BEST_EFFORT_OFFER)
    assert result.sdp.media[0].proto == "RTP/AVP"
    assert result.srtp and result.sdp.media[0].attribute_values("crypto") == [
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{LOCAL_KEY_B64}"
    ]
    assert answer(BEST_EFFORT_OFFER, srtp=SrtpMode.REQUIRED).srtp
    off = answer(BEST_EFFORT_OFFER, srtp=SrtpMode.OFF)
    assert (off.srtp, off.sdp.media[0].attribute_values("crypto")) == (False, [])


@pytest.mark.parametrize(
    ("offered_direction", "connection", "expected"),
    [
        ("a=sendonly", "c=IN IP4 168.86.128.61", Direction.RECVONLY),
        ("a=inactive", "c=IN IP4 168.86.128.61", Direction.INACTIVE),
        ("a=recvonly", "c=IN IP4 168.86.128.61", Direction.SENDONLY),
        # RFC 3264 section 8.4: c=0.0.0.0 means the offerer will not receive.
        ("a=sendrecv", "c=IN IP4 0.0.0.0", Direction.RECVONLY),
        ("a=sendonly", "c=IN IP4 0.0.0.0", Direction.RECVONLY),
        ("a=recvonly", "c=IN IP4 0.0.0.0", Direction.INACTIVE),
    ],
)
def test_hold_offers(offered_direction: str, connection: str, expected: Direction) -> None:
    offer = TWILIO_OFFER.replace("a=sendrecv", offered_direction).replace(
        "c=IN IP4 168.86.128.61", connection
    )
    result = answer(offer)
    assert result.direction == expected
    assert result.sdp.media[0].direction == expected
    directions = [a.name for a in result.sdp.media[0].attributes if a.name in set(Direction)]
    assert directions == [expected.value]
    assert result.remote_address == connection.split()[-1]


def test_hold_offer_answer_text() -> None:
    result = answer(TWILIO_OFFER.replace("a=sendrecv", "a=sendonly"), srtp=SrtpMode.REQUIRED)
    assert str(result.sdp) == sdp(
        *ANSWER_HEAD,
        "m=audio 40000 RTP/SAVP 0 101",
        *PCMU_TE_LINES,
        "a=recvonly",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{LOCAL_KEY_B64}",
    )


def test_session_level_direction_is_honoured() -> None:
    offer = TWILIO_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n").replace("a=sendrecv\r\n", "")
    assert answer(offer).direction == Direction.RECVONLY


def test_our_direction_narrows_the_answer() -> None:
    assert answer(TWILIO_OFFER, direction=Direction.SENDONLY).direction == Direction.SENDONLY
    held = answer(TWILIO_OFFER.replace("a=sendrecv", "a=sendonly"), direction=Direction.SENDONLY)
    assert held.direction == Direction.INACTIVE


def test_video_is_rejected_with_port_zero() -> None:
    offer = BARESIP_OFFER + sdp(
        "m=video 44614 RTP/SAVP 96 97",
        "a=rtpmap:96 VP8/90000",
        "a=rtpmap:97 H264/90000",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{BARESIP_KEY}",
    )
    result = answer(offer)
    assert str(result.sdp) == sdp(
        *ANSWER_HEAD,
        "m=audio 40000 RTP/SAVP 0 101",
        *PCMU_TE_LINES,
        "a=rtcp-mux",
        "a=sendrecv",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{LOCAL_KEY_B64}",
        "m=video 0 RTP/SAVP 96 97",
    )


def test_rfc8866_example_answer_mirrors_every_m_line() -> None:
    result = answer(RFC8866_EXAMPLE)
    assert str(result.sdp) == sdp(
        *ANSWER_HEAD,
        "m=audio 40000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=ptime:20",
        "a=maxptime:20",
        "a=sendrecv",
        "m=audio 0 RTP/AVP 0",
        "m=video 0 RTP/AVP 99",
    )
    assert (result.remote_address, result.remote_port) == ("198.51.100.1", 49170)


def test_first_audio_stream_that_fails_is_rejected_and_next_is_taken() -> None:
    offer = sdp(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 1000 RTP/AVP 18",
        "m=audio 2000 RTP/AVP 8",
        "m=audio 0 RTP/AVP 0",
    )
    result = answer(offer)
    assert [(m.port, m.formats) for m in result.sdp.media] == [(0, ["18"]), (40000, ["8"]), (0, ["0"])]
    assert (result.media_index, result.codec, result.remote_port) == (1, PCMA, 2000)


@pytest.mark.parametrize(
    ("offer", "kwargs", "warning"),
    [
        (
            TWILIO_OFFER.replace(" 0 8 101", " 18 101"),
            {},
            '305 203.0.113.10 "no common codec"',
        ),
        (
            TWILIO_OFFER.replace(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{TWILIO_KEY}\r\n", ""),
            {},
            '399 203.0.113.10 "no usable crypto attribute"',
        ),
        (
            TWILIO_OFFER.replace("AES_CM_128_HMAC_SHA1_80", "F8_128_HMAC_SHA1_80"),
            {},
            '399 203.0.113.10 "no usable crypto attribute"',
        ),
        (PLAIN_OFFER, {"srtp": SrtpMode.REQUIRED}, '399 203.0.113.10 "SRTP required"'),
        (TWILIO_OFFER, {"srtp": SrtpMode.OFF}, '399 203.0.113.10 "SRTP is not enabled"'),
        (
            TWILIO_OFFER.replace("m=audio", "m=video"),
            {},
            '304 203.0.113.10 "no audio stream offered"',
        ),
        (
            TWILIO_OFFER.replace("c=IN IP4 168.86.128.61", "c=IN IP6 2001:db8::1"),
            {},
            '301 203.0.113.10 "address type IP6 not available"',
        ),
        (
            TWILIO_OFFER.replace("RTP/SAVP", "UDP/TLS/RTP/SAVP"),
            {},
            '302 203.0.113.10 "unsupported transport UDP/TLS/RTP/SAVP"',
        ),
        (
            TWILIO_OFFER.replace("c=IN IP4 168.86.128.61\r\n", ""),
            {},
            '399 203.0.113.10 "no c= line for the audio stream"',
        ),
        (
            TWILIO_OFFER.replace("a=ptime:20", "a=ptime:twenty"),
            {},
            "399 203.0.113.10 \"invalid ptime: 'twenty'\"",
        ),
        (
            TWILIO_OFFER.replace(" 0 8 101", " 18"),
            {"warn_agent": "edge-1.example.com"},
            '305 edge-1.example.com "no common codec"',
        ),
    ],
)
def test_unacceptable_offers_raise_488_with_warning(
    offer: str, kwargs: dict[str, object], warning: str
) -> None:
    assert refused(offer, **kwargs).warning == warning


def test_warning_escapes_and_brackets_ipv6() -> None:
    error = NegotiationError(399, 'bad "quote" \\ here', "[2001:db8::1]")
    assert error.warning == '399 [2001:db8::1] "bad \\"quote\\" \\\\ here"'
    offer = TWILIO_OFFER.replace(" 0 8 101", " 18").replace("IP4 168.86.128.61", "IP6 2001:db8::9")
    with pytest.raises(NegotiationError) as info:
        negotiate_answer(SessionDescription.parse(offer), "2001:db8::1", 4000)
    assert info.value.warning == '305 [2001:db8::1] "no common codec"'


def test_ipv6_answer() -> None:
    offer = TWILIO_OFFER.replace("IP4 168.86.128.61", "IP6 2001:db8::9")
    result = negotiate_answer(
        SessionDescription.parse(offer), "2001:db8::1", 4000, local_crypto_factory=local_crypto, session_id=7
    )
    assert str(result.sdp).startswith(sdp("v=0", "o=- 7 7 IN IP6 2001:db8::1", "s=-", "c=IN IP6 2001:db8::1"))
    assert result.remote_address == "2001:db8::9"


# --- Our offers and their answers -------------------------------------------------------------

OFFER_80 = CryptoAttribute(1, SUITE_AES_CM_128_HMAC_SHA1_80, bytes(range(30)))
OFFER_32 = CryptoAttribute(2, SUITE_AES_CM_128_HMAC_SHA1_32, bytes(range(30, 60)))
OFFER_32_B64 = base64.b64encode(bytes(range(30, 60))).decode()


def srtp_offer(**kwargs: object) -> SessionDescription:
    params: dict[str, object] = {"srtp": True, "crypto": [OFFER_80, OFFER_32], "session_id": 900}
    params.update(kwargs)
    return build_offer(LOCAL_IP, LOCAL_PORT, **params)  # type: ignore[arg-type]


def test_build_offer_plain() -> None:
    offer = build_offer(LOCAL_IP, LOCAL_PORT, session_id=900)
    assert str(offer) == sdp(
        "v=0",
        "o=- 900 900 IN IP4 203.0.113.10",
        "s=-",
        "c=IN IP4 203.0.113.10",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=maxptime:20",
        "a=sendrecv",
    )


def test_build_offer_srtp() -> None:
    assert str(srtp_offer()) == sdp(
        "v=0",
        "o=- 900 900 IN IP4 203.0.113.10",
        "s=-",
        "c=IN IP4 203.0.113.10",
        "t=0 0",
        "m=audio 40000 RTP/SAVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=maxptime:20",
        "a=sendrecv",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{LOCAL_KEY_B64}",
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{OFFER_32_B64}",
    )


def test_build_offer_generates_both_suites() -> None:
    offer = build_offer(LOCAL_IP, LOCAL_PORT, srtp=True, rtcp_mux=True)
    crypto = offer.media[0].crypto()
    assert [(c.tag, c.suite, len(c.key_salt)) for c in crypto] == [
        (1, SUITE_AES_CM_128_HMAC_SHA1_80, 30),
        (2, SUITE_AES_CM_128_HMAC_SHA1_32, 30),
    ]
    assert crypto[0].key_salt != crypto[1].key_salt
    assert offer.media[0].rtcp_mux
    assert offer.origin.session_version == int(offer.origin.session_id) > 0


def test_build_offer_versions_against_previous() -> None:
    first = srtp_offer()
    same = srtp_offer(session_id=None, previous=first)
    assert str(same) == str(first)
    moved = srtp_offer(session_id=None, previous=first, direction=Direction.SENDONLY)
    assert moved.origin == replace(first.origin, session_version=901)
    assert moved.media[0].direction == Direction.SENDONLY
    again = srtp_offer(previous=moved)
    assert again.origin.session_version == 902


TWILIO_ANSWER_TO_US = sdp(
    "v=0",
    "o=root 1031 1031 IN IP4 168.86.128.70",
    "s=Twilio Media Gateway",
    "c=IN IP4 168.86.128.70",
    "t=0 0",
    "m=audio 19032 RTP/SAVP 0 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=sendrecv",
    f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{TWILIO_KEY}",
)


def test_process_answer() -> None:
    result = process_answer(srtp_offer(), SessionDescription.parse(TWILIO_ANSWER_TO_US))
    assert (result.codec, result.telephone_event_pt, result.ptime) == (PCMU, 101, 20)
    assert (result.remote_address, result.remote_port, result.remote_rtcp_port) == (
        "168.86.128.70",
        19032,
        19033,
    )
    assert (result.direction, result.rtcp_mux, result.media_index) == (Direction.SENDRECV, False, 0)
    assert result.local_crypto == OFFER_32
    assert result.remote_crypto is not None
    assert (result.remote_crypto.tag, result.remote_crypto.key_salt) == (2, base64.b64decode(TWILIO_KEY))
    assert result.policy is None


def test_process_answer_uses_answer_payload_numbers_and_direction() -> None:
    text = (
        TWILIO_ANSWER_TO_US.replace(" 0 101", " 8 96")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000")
        .replace("101 telephone-event", "96 telephone-event")
        .replace("a=fmtp:101", "a=fmtp:96")
        .replace("a=sendrecv", "a=recvonly")
        .replace("a=ptime:20", "a=ptime:30")
    )
    result = process_answer(srtp_offer(), SessionDescription.parse(text))
    assert (result.codec, result.telephone_event_pt, result.direction, result.ptime) == (
        PCMA,
        96,
        Direction.SENDONLY,
        30,
    )


def test_negotiate_then_process_round_trip_with_rtcp_mux() -> None:
    offer = srtp_offer(rtcp_mux=True)
    ours = negotiate_answer(offer, "198.51.100.5", 5000, local_crypto_factory=generate_crypto)
    theirs = process_answer(offer, SessionDescription.parse(str(ours.sdp)))
    assert (theirs.codec, theirs.telephone_event_pt, theirs.rtcp_mux) == (PCMU, 101, True)
    assert (theirs.remote_address, theirs.remote_port, theirs.remote_rtcp_port) == (
        "198.51.100.5",
        5000,
        5000,
    )
    assert theirs.local_crypto == OFFER_80
    assert theirs.remote_crypto == ours.local_crypto
    assert ours.remote_crypto == OFFER_80


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        (
            TWILIO_ANSWER_TO_US.replace("m=audio 19032", "m=audio 0"),
            '304 203.0.113.10 "audio stream rejected"',
        ),
        (
            TWILIO_ANSWER_TO_US.replace("a=crypto:2", "a=crypto:7"),
            '399 203.0.113.10 "answer crypto does not match the offer"',
        ),
        (
            TWILIO_ANSWER_TO_US.replace("_SHA1_32", "_SHA1_80"),
            '399 203.0.113.10 "answer crypto does not match the offer"',
        ),
        (
            TWILIO_ANSWER_TO_US + f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{TWILIO_KEY}\r\n",
            '399 203.0.113.10 "answer crypto does not match the offer"',
        ),
        (
            TWILIO_ANSWER_TO_US.replace(f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{TWILIO_KEY}\r\n", ""),
            '399 203.0.113.10 "answer has no crypto attribute"',
        ),
        (
            TWILIO_ANSWER_TO_US.replace("RTP/SAVP", "RTP/AVP"),
            '302 203.0.113.10 "answer changed RTP/SAVP to RTP/AVP"',
        ),
        (
            TWILIO_ANSWER_TO_US.replace(" 0 101", " 18 101"),
            '305 203.0.113.10 "answer has none of the offered codecs"',
        ),
        (
            TWILIO_ANSWER_TO_US + "m=video 0 RTP/AVP 31\r\n",
            '399 203.0.113.10 "answer has 2 m-lines, offer had 1"',
        ),
    ],
)
def test_bad_answers(text: str, warning: str) -> None:
    with pytest.raises(NegotiationError) as info:
        process_answer(srtp_offer(), SessionDescription.parse(text))
    assert info.value.warning == warning


def test_plain_answer_to_plain_offer() -> None:
    offer = build_offer(LOCAL_IP, LOCAL_PORT)
    answer_text = TWILIO_ANSWER_TO_US.replace("RTP/SAVP", "RTP/AVP").replace(
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{TWILIO_KEY}\r\n", ""
    )
    result = process_answer(offer, SessionDescription.parse(answer_text))
    assert (result.srtp, result.local_crypto, result.codec) == (False, None, PCMU)


# --- Re-INVITE --------------------------------------------------------------------------------


def test_update_answer_unchanged_keeps_version_and_key() -> None:
    first = answer(TWILIO_OFFER, local_crypto_factory=generate_crypto)
    again = update_answer(first, SessionDescription.parse(TWILIO_OFFER))
    assert str(again.sdp) == str(first.sdp)
    assert again.local_crypto == first.local_crypto
    assert again.policy == first.policy


def test_update_answer_hold_and_resume_bump_version() -> None:
    first = answer(TWILIO_OFFER)
    held = update_answer(first, SessionDescription.parse(TWILIO_OFFER.replace("a=sendrecv", "a=sendonly")))
    assert (held.sdp.origin.session_version, held.direction) == (4243, Direction.RECVONLY)
    assert str(held.sdp) == sdp(
        "v=0",
        "o=- 4242 4243 IN IP4 203.0.113.10",
        *ANSWER_HEAD[2:],
        "m=audio 40000 RTP/SAVP 0 101",
        *PCMU_TE_LINES,
        "a=recvonly",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{LOCAL_KEY_B64}",
    )
    resumed = update_answer(held, SessionDescription.parse(TWILIO_OFFER))
    assert (resumed.sdp.origin.session_version, resumed.direction) == (4244, Direction.SENDRECV)


def test_update_answer_new_remote_key_does_not_change_our_answer() -> None:
    first = answer(TWILIO_OFFER)
    rekeyed = update_answer(first, SessionDescription.parse(TWILIO_OFFER.replace(TWILIO_KEY, BARESIP_KEY)))
    assert str(rekeyed.sdp) == str(first.sdp)
    assert rekeyed.remote_crypto is not None
    assert rekeyed.remote_crypto.key_salt == base64.b64decode(BARESIP_KEY)


def test_update_answer_with_new_local_port() -> None:
    first = answer(TWILIO_OFFER)
    moved = update_answer(first, SessionDescription.parse(TWILIO_OFFER), local_port=41000)
    assert moved.sdp.origin.session_version == 4243
    assert moved.sdp.media[0].port == 41000
    assert moved.policy is not None and moved.policy.local_port == 41000


def test_update_answer_refuses_removed_m_lines_and_foreign_answers() -> None:
    first = answer(BARESIP_OFFER + "m=video 0 RTP/SAVP 96\r\n")
    with pytest.raises(NegotiationError) as info:
        update_answer(first, SessionDescription.parse(BARESIP_OFFER))
    assert info.value.warning == '399 203.0.113.10 "a new offer must not remove m-lines"'
    theirs = process_answer(srtp_offer(), SessionDescription.parse(TWILIO_ANSWER_TO_US))
    with pytest.raises(SdpError, match="only an answer made by negotiate_answer"):
        update_answer(theirs, SessionDescription.parse(TWILIO_OFFER))
