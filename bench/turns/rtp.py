"""RTP packets by hand (RFC 3550) and SRTP through pylibsrtp (RFC 3711, SDES keys of RFC 4568)."""

from __future__ import annotations

import base64
import os
import struct
from dataclasses import dataclass

import pylibsrtp

HEADER = struct.Struct("!BBHII")
VERSION = 2
PCMU = 0
SAMPLES_PER_PACKET = 160  # 20 ms at 8 kHz
KEY_SALT_BYTES = 30  # AES_CM_128_HMAC_SHA1_80: 16-byte key + 14-byte salt


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def build_rtp(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    second = (0x80 if marker else 0) | (payload_type & 0x7F)
    return HEADER.pack(VERSION << 6, second, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + payload


def parse_rtp(data: bytes) -> RtpPacket:
    """Skips CSRCs, a header extension and padding; ValueError on anything that is not RTP v2."""
    if len(data) < HEADER.size:
        raise ValueError("shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(data)
    if first >> 6 != VERSION:
        raise ValueError("not RTP version 2")
    offset = HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < offset + 4:
            raise ValueError("truncated header extension")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20 and end > offset:
        end -= data[-1]
    if end < offset:
        raise ValueError("truncated RTP packet")
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, bool(second & 0x80), data[offset:end])


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 section 4: with rtcp-mux, packet types 192-223 (RTP payload types 64-95) are RTCP."""
    return len(data) >= 2 and 64 <= (data[1] & 0x7F) <= 95


def new_key() -> bytes:
    return os.urandom(KEY_SALT_BYTES)


def inline_key(key_salt: bytes) -> str:
    """The base64 that goes after ``inline:`` in ``a=crypto``."""
    return base64.b64encode(key_salt).decode("ascii")


def key_from_inline(value: str) -> bytes:
    """``inline:<base64>[|lifetime][|MKI:len]`` or bare base64 -> the 30-byte key and salt."""
    text = value.removeprefix("inline:").split("|", 1)[0]
    key = base64.b64decode(text + "=" * (-len(text) % 4))
    if len(key) != KEY_SALT_BYTES:
        raise ValueError(f"an AES_CM_128 key and salt is {KEY_SALT_BYTES} bytes, not {len(key)}")
    return key


class Srtp:
    """One direction of SRTP: ``outbound`` protects what we send with our key, otherwise unprotects
    what the peer sends with its key."""

    def __init__(self, key_salt: bytes, *, outbound: bool) -> None:
        policy = pylibsrtp.Policy(
            key=key_salt,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
        self._session = pylibsrtp.Session(policy=policy)

    def protect(self, packet: bytes) -> bytes:
        return bytes(self._session.protect(packet))

    def unprotect(self, packet: bytes) -> bytes:
        return bytes(self._session.unprotect(packet))
