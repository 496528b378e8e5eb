import json
from pathlib import Path
from typing import Any

import pylibsrtp
import pytest

from activecall.media.rtcp import RtcpReportBlock, RtcpRrPacket, RtcpSdesPacket, serialize_compound
from activecall.media.rtp import RtpPacket
from activecall.media.srtp import (
    SRTP_KEY_SALT_LENGTH,
    SrtpAuthError,
    SrtpError,
    SrtpKeyError,
    SrtpMalformedError,
    SrtpProfile,
    SrtpReplayError,
    SrtpSession,
    format_sdes_inline,
    generate_key_salt,
    parse_sdes_inline,
)

VECTORS = Path(__file__).parent / "vectors"
KEY_A = bytes(range(30))
KEY_B = bytes(range(100, 130))


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / "srtp-known-answer.json").read_text())
    return data


def key_of(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["master_key_hex"]) + bytes.fromhex(vector["master_salt_hex"])


def session_for(vector: dict[str, Any]) -> SrtpSession:
    profile = SrtpProfile.from_suite(vector["profile"])
    return SrtpSession(profile, key_of(vector), key_of(vector))


def rtp(seq: int, ssrc: int = 0x1234ABCD, payload: bytes = b"\xd5" * 160) -> bytes:
    return bytes(
        RtpPacket(payload_type=8, sequence_number=seq, timestamp=seq * 160, ssrc=ssrc, payload=payload)
    )


def test_known_answer_protect(vector: dict[str, Any]) -> None:
    plaintext = bytes.fromhex(vector["plaintext_hex"])
    assert session_for(vector).protect(plaintext) == bytes.fromhex(vector["ciphertext_hex"])


def test_known_answer_unprotect(vector: dict[str, Any]) -> None:
    ciphertext = bytes.fromhex(vector["ciphertext_hex"])
    assert session_for(vector).unprotect(ciphertext) == bytes.fromhex(vector["plaintext_hex"])


def test_every_single_bit_flip_is_rejected_and_counted(vector: dict[str, Any]) -> None:
    ciphertext = bytes.fromhex(vector["ciphertext_hex"])
    session = session_for(vector)
    malformed_bits = []
    for bit in range(len(ciphertext) * 8):
        corrupted = bytearray(ciphertext)
        corrupted[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises((SrtpAuthError, SrtpMalformedError)) as info:
            session.unprotect(bytes(corrupted))
        if isinstance(info.value, SrtpMalformedError):
            malformed_bits.append(bit)
    # Only the X bit and the high CSRC-count bit make libsrtp refuse the header before authenticating.
    assert malformed_bits == [3, 4]
    assert session.auth_failures == len(ciphertext) * 8 - 2
    assert session.malformed == 2
    assert session.replays == 0
    # Failed packets leave no state behind: the genuine packet still verifies once.
    assert session.unprotect(ciphertext) == bytes.fromhex(vector["plaintext_hex"])


def test_replayed_packet_is_rejected_and_counted(vector: dict[str, Any]) -> None:
    ciphertext = bytes.fromhex(vector["ciphertext_hex"])
    session = session_for(vector)
    session.unprotect(ciphertext)
    with pytest.raises(SrtpReplayError, match="^SRTP replay rejected: replay check failed \\(bad index\\)$"):
        session.unprotect(ciphertext)
    with pytest.raises(SrtpReplayError):
        session.unprotect(ciphertext)
    assert (session.replays, session.auth_failures, session.malformed) == (2, 0, 0)


def test_packet_behind_the_replay_window_is_a_replay() -> None:
    sender = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, KEY_A, KEY_B)
    receiver = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, KEY_B, KEY_A)
    protected = [sender.protect(rtp(seq)) for seq in range(200)]
    receiver.unprotect(protected[199])
    with pytest.raises(SrtpReplayError, match="index too old"):
        receiver.unprotect(protected[0])  # 199 packets back, the default window is 128
    assert receiver.unprotect(protected[150]) == rtp(150)  # reordered, inside the window
    assert receiver.replays == 1


@pytest.mark.parametrize(
    ("profile", "tag_length"),
    [(SrtpProfile.AES_CM_128_HMAC_SHA1_80, 10), (SrtpProfile.AES_CM_128_HMAC_SHA1_32, 4)],
)
def test_round_trip_between_two_legs(profile: SrtpProfile, tag_length: int) -> None:
    alice = SrtpSession(profile, tx_key_salt=KEY_A, rx_key_salt=KEY_B)
    bob = SrtpSession(profile, tx_key_salt=KEY_B, rx_key_salt=KEY_A)
    assert profile.rtp_tag_length == tag_length
    for seq in (65534, 65535, 0, 1):  # across the sequence wrap (ROC increments)
        packet = rtp(seq)
        protected = alice.protect(packet)
        assert len(protected) == len(packet) + tag_length
        assert protected[:12] == packet[:12]
        assert protected[12:-tag_length] != packet[12:]
        assert bob.unprotect(protected) == packet
        assert alice.unprotect(bob.protect(packet)) == packet


@pytest.mark.parametrize("profile", list(SrtpProfile))
def test_srtcp_round_trip_and_failures(profile: SrtpProfile) -> None:
    alice = SrtpSession(profile, KEY_A, KEY_B)
    bob = SrtpSession(profile, KEY_B, KEY_A)
    compound = serialize_compound(
        [
            RtcpRrPacket(0x1234ABCD, [RtcpReportBlock(0x55667788, 3, 12, 70000, 40)]),
            RtcpSdesPacket.with_cname(1, "a@b"),
        ]
    )
    protected = alice.protect_rtcp(compound)
    # SRTCP adds the E flag + 31-bit index, then an 80-bit tag for both suites (RFC 3711 3.4, 4568 6.2).
    assert len(protected) == len(compound) + 4 + 10
    assert protected[-14] & 0x80  # E bit: encrypted
    assert bob.unprotect_rtcp(protected) == compound
    with pytest.raises(SrtpReplayError, match="^SRTCP replay rejected"):
        bob.unprotect_rtcp(protected)
    tampered = bytearray(alice.protect_rtcp(compound))
    tampered[10] ^= 1
    with pytest.raises(SrtpAuthError, match="^SRTCP authentication failed$"):
        bob.unprotect_rtcp(bytes(tampered))
    assert (bob.replays, bob.auth_failures) == (1, 1)


def test_wrong_key_is_an_auth_failure() -> None:
    sender = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, KEY_A, KEY_A)
    receiver = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, KEY_B, KEY_B)
    with pytest.raises(SrtpAuthError, match="^SRTP authentication failed$"):
        receiver.unprotect(sender.protect(rtp(1)))
    assert receiver.auth_failures == 1


def test_truncated_packets_are_malformed() -> None:
    session = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, KEY_A, KEY_B)
    for data in (b"", b"\x80\x00", bytes(12)):
        with pytest.raises(SrtpMalformedError):
            session.unprotect(data)
    with pytest.raises(SrtpMalformedError, match="^SRTCP packet header is malformed$"):
        session.unprotect_rtcp(b"\x80\xc9")
    assert session.malformed == 4
    assert issubclass(SrtpMalformedError, SrtpError) and issubclass(SrtpError, ValueError)


def test_ssrc_change_mid_call_creates_a_new_stream() -> None:
    alice = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, KEY_A, KEY_B)
    bob = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, KEY_B, KEY_A)
    assert bob.unprotect(alice.protect(rtp(10, ssrc=1))) == rtp(10, ssrc=1)
    assert bob.unprotect(alice.protect(rtp(10, ssrc=2))) == rtp(10, ssrc=2)


def test_sdes_inline_of_the_known_answer_key(vector: dict[str, Any]) -> None:
    assert parse_sdes_inline(vector["sdes_inline"]) == key_of(vector)
    assert parse_sdes_inline("inline:" + vector["sdes_inline"]) == key_of(vector)
    assert parse_sdes_inline("inline:" + vector["sdes_inline"] + "|2^31") == key_of(vector)
    assert format_sdes_inline(key_of(vector)) == "inline:" + vector["sdes_inline"]


@pytest.mark.parametrize(
    ("key_params", "message"),
    [
        ("inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOqvm|2^20|1:4", "with an MKI are not supported"),
        ("inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYLOq!m", "not valid base64"),
        ("inline:4fl6DT4Bi+DWT6MsBt5BOQ7Gda1Jiv7rtpYL", "SDES key is 27 bytes, expected 30"),
        ("inline:", "SDES key is 0 bytes, expected 30"),
    ],
)
def test_bad_sdes_key_params(key_params: str, message: str) -> None:
    with pytest.raises(SrtpKeyError, match=message):
        parse_sdes_inline(key_params)


def test_key_helpers() -> None:
    key = generate_key_salt()
    assert len(key) == SRTP_KEY_SALT_LENGTH
    assert generate_key_salt() != key
    assert parse_sdes_inline(format_sdes_inline(key)) == key
    with pytest.raises(SrtpKeyError, match="are 16 bytes, expected 30"):
        format_sdes_inline(bytes(16))
    with pytest.raises(SrtpKeyError, match="are 29 bytes, expected 30"):
        SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, bytes(29), KEY_A)


def test_profiles_by_suite_name() -> None:
    assert SrtpProfile.from_suite("AES_CM_128_HMAC_SHA1_32") is SrtpProfile.AES_CM_128_HMAC_SHA1_32
    assert SrtpProfile.from_suite("AES_CM_128_HMAC_SHA1_80").value == "AES_CM_128_HMAC_SHA1_80"
    with pytest.raises(SrtpKeyError, match="unsupported SRTP crypto suite 'AEAD_AES_128_GCM'"):
        SrtpProfile.from_suite("AEAD_AES_128_GCM")


def test_the_packet_path_gives_the_bytes_and_errors_of_pylibsrtp() -> None:
    """SrtpSession calls libsrtp without pylibsrtp's Session wrapper: same packets, same failures."""
    ours = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, KEY_A, KEY_B)
    policy = pylibsrtp.Policy(
        key=KEY_A,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=SrtpProfile.AES_CM_128_HMAC_SHA1_80.libsrtp_profile,
    )
    reference = pylibsrtp.Session(policy)
    peer = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, KEY_B, KEY_A)
    for seq in range(65530, 65536 + 6):
        packet = rtp(seq & 0xFFFF, payload=bytes([seq & 0xFF]) * (seq % 200))
        protected = ours.protect(packet)
        assert protected == reference.protect(packet)
        assert peer.unprotect(protected) == packet
    with pytest.raises(SrtpReplayError):
        peer.unprotect(protected)
    with pytest.raises(ValueError, match="packet is too long"):
        ours.protect(rtp(1, payload=bytes(1400)))
    with pytest.raises(TypeError, match="packet must be bytes"):
        ours.protect(bytearray(rtp(2)))  # type: ignore[arg-type]
