"""SRTP and SRTCP (RFC 3711) through libsrtp, with SDES key handling (RFC 4568).

All cryptography is libsrtp's (via pylibsrtp); this module maps its profiles to SDES suite names,
turns its error strings into precise exceptions and counts failures for metrics. RTP packets, two per
call every 20 ms, go to libsrtp through pylibsrtp's cffi binding directly (:class:`_PacketPath`):
the ``Session`` wrapper allocates and checks on every call, which cost as much as the cipher.
"""

from __future__ import annotations

import base64
import binascii
import enum
import secrets
from typing import Final

import pylibsrtp
from pylibsrtp._binding import ffi, lib  # pinned in constraints.txt: _PacketPath relies on 1.0's layout

SRTP_KEY_LENGTH: Final = 16
SRTP_SALT_LENGTH: Final = 14
SRTP_KEY_SALT_LENGTH: Final = SRTP_KEY_LENGTH + SRTP_SALT_LENGTH
SDES_INLINE_PREFIX: Final = "inline:"

# libsrtp's srtp_err_status_t texts as pylibsrtp reports them.
_LIBSRTP_AUTH_FAIL: Final = "authentication failure"
_LIBSRTP_REPLAY_FAIL: Final = "replay check failed (bad index)"
_LIBSRTP_REPLAY_OLD: Final = "replay check failed (index too old)"
_LIBSRTP_MALFORMED: Final = ("unsupported parameter", "error parsing data")
_LIBSRTP_PROFILE_80: Final[int] = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
_LIBSRTP_PROFILE_32: Final[int] = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32
_SSRC_ANY_INBOUND: Final[int] = pylibsrtp.Policy.SSRC_ANY_INBOUND
_SSRC_ANY_OUTBOUND: Final[int] = pylibsrtp.Policy.SSRC_ANY_OUTBOUND
_BUFFER_BYTES: Final = 1500  # pylibsrtp's own buffer size, and so its largest packet
_RTP_TRAILER_BYTES: Final = pylibsrtp.SRTP_MAX_TRAILER_LEN


class SrtpError(ValueError):
    """An SRTP operation failed."""


class SrtpAuthError(SrtpError):
    """The authentication tag did not verify (tampering, wrong key, corruption)."""


class SrtpReplayError(SrtpError):
    """The packet index was already seen or fell behind the replay window (RFC 3711 3.3.2)."""


class SrtpMalformedError(SrtpError):
    """libsrtp rejected the packet before authentication: too short, or not a valid RTP/RTCP header."""


class SrtpKeyError(SrtpError):
    """An SDES key parameter or a master key of the wrong form."""


class SrtpProfile(enum.Enum):
    """Crypto suites offered with SDES (RFC 4568 section 6.2), valued by their SDP names."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"

    @property
    def libsrtp_profile(self) -> int:
        return _LIBSRTP_PROFILE_80 if self is SrtpProfile.AES_CM_128_HMAC_SHA1_80 else _LIBSRTP_PROFILE_32

    @property
    def rtp_tag_length(self) -> int:
        return 10 if self is SrtpProfile.AES_CM_128_HMAC_SHA1_80 else 4

    @classmethod
    def from_suite(cls, suite: str) -> SrtpProfile:
        try:
            return cls(suite)
        except ValueError:
            raise SrtpKeyError(f"unsupported SRTP crypto suite {suite!r}") from None


def generate_key_salt() -> bytes:
    """A fresh random 30-byte master key || master salt."""
    return secrets.token_bytes(SRTP_KEY_SALT_LENGTH)


def parse_sdes_inline(key_params: str) -> bytes:
    """Master key || salt (30 bytes) from an SDES key parameter (RFC 4568 section 6.1).

    Accepts `inline:<base64>[|lifetime][|MKI:length]` or the bare base64. Lifetime is ignored; an MKI
    is refused because the project negotiates none.
    """
    value = key_params.removeprefix(SDES_INLINE_PREFIX)
    key_info, *options = value.split("|")
    if any(":" in option for option in options):
        raise SrtpKeyError("SDES key parameters with an MKI are not supported")
    try:
        key_salt = base64.b64decode(key_info, validate=True)
    except binascii.Error as exc:
        raise SrtpKeyError(f"SDES key is not valid base64: {exc}") from None
    if len(key_salt) != SRTP_KEY_SALT_LENGTH:
        raise SrtpKeyError(f"SDES key is {len(key_salt)} bytes, expected {SRTP_KEY_SALT_LENGTH}")
    return key_salt


def format_sdes_inline(key_salt: bytes) -> str:
    """The `inline:<base64>` key parameter of an `a=crypto` line (RFC 4568 section 6.1)."""
    _check_key_salt(key_salt)
    return SDES_INLINE_PREFIX + base64.b64encode(key_salt).decode("ascii")


def _check_key_salt(key_salt: bytes) -> None:
    if len(key_salt) != SRTP_KEY_SALT_LENGTH:
        raise SrtpKeyError(f"SRTP master key and salt are {len(key_salt)} bytes, expected 30")


class _PacketPath:
    """``srtp_protect`` or ``srtp_unprotect`` on one pylibsrtp session with a buffer of its own.

    The same bytes and the same errors as ``pylibsrtp.Session.protect`` / ``unprotect``; a packet too
    long for the buffer goes through the wrapper, which refuses it as it always did.
    """

    __slots__ = ("_session", "_context", "_call", "_fallback", "_cdata", "_buffer", "_length", "_limit")

    def __init__(self, session: pylibsrtp.Session, protect: bool) -> None:
        self._session = session  # owns the libsrtp context and frees it
        self._context = session._srtp[0]
        self._call = lib.srtp_protect if protect else lib.srtp_unprotect
        self._fallback = session.protect if protect else session.unprotect
        self._cdata = ffi.new("char[]", _BUFFER_BYTES)
        self._buffer = memoryview(ffi.buffer(self._cdata))  # copies in and out faster than the buffer
        self._length = ffi.new("int *")
        self._limit = _BUFFER_BYTES - (_RTP_TRAILER_BYTES if protect else 0)

    def __call__(self, data: bytes) -> bytes:
        size = len(data)
        if size > self._limit or type(data) is not bytes:
            result: bytes = self._fallback(data)
            return result
        length = self._length
        length[0] = size
        buffer = self._buffer
        buffer[0:size] = data
        status = self._call(self._context, self._cdata, length)
        if status:
            raise pylibsrtp.Error(pylibsrtp.ERRORS[status])
        return buffer[: length[0]].tobytes()


class SrtpSession:
    """One SRTP context pair for a call leg: outbound keyed with `tx_key_salt`, inbound with
    `rx_key_salt` (each 16-byte master key || 14-byte master salt, RFC 3711 section 8.2).

    Streams are created per SSRC on first use, so the peer may change SSRC mid-call. Failed unprotects
    raise and are counted in `auth_failures`, `replays` and `malformed`.
    """

    def __init__(self, profile: SrtpProfile, tx_key_salt: bytes, rx_key_salt: bytes) -> None:
        _check_key_salt(tx_key_salt)
        _check_key_salt(rx_key_salt)
        self.profile = profile
        self.auth_failures = 0
        self.replays = 0
        self.malformed = 0
        self._tx = pylibsrtp.Session(self._policy(tx_key_salt, _SSRC_ANY_OUTBOUND))
        self._rx = pylibsrtp.Session(self._policy(rx_key_salt, _SSRC_ANY_INBOUND))
        self._protect = _PacketPath(self._tx, protect=True)
        self._unprotect = _PacketPath(self._rx, protect=False)

    def replace_remote_key(self, rx_key_salt: bytes) -> None:
        """A new inbound key (the peer re-keyed in a re-INVITE, RFC 4568 section 7.1.4) while the
        outbound context goes on: a fresh one under the same local key would count the SRTP rollover
        and the SRTCP index from zero again and reuse key stream, which RFC 3711 section 9.1 forbids."""
        _check_key_salt(rx_key_salt)
        self._rx = pylibsrtp.Session(self._policy(rx_key_salt, _SSRC_ANY_INBOUND))
        self._unprotect = _PacketPath(self._rx, protect=False)

    def _policy(self, key_salt: bytes, ssrc_type: int) -> pylibsrtp.Policy:
        return pylibsrtp.Policy(key=key_salt, ssrc_type=ssrc_type, srtp_profile=self.profile.libsrtp_profile)

    def protect(self, rtp: bytes) -> bytes:
        """RTP -> SRTP (RFC 3711 section 3.3)."""
        try:
            return self._protect(rtp)
        except pylibsrtp.Error as exc:
            raise SrtpError(f"SRTP protect failed: {exc}") from None

    def unprotect(self, srtp: bytes) -> bytes:
        """SRTP -> RTP; raises SrtpAuthError, SrtpReplayError or SrtpMalformedError."""
        try:
            return self._unprotect(srtp)
        except pylibsrtp.Error as exc:
            raise self._count_failure("SRTP", exc) from None

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """RTCP -> SRTCP (RFC 3711 section 3.4)."""
        try:
            return self._tx.protect_rtcp(rtcp)
        except pylibsrtp.Error as exc:
            raise SrtpError(f"SRTCP protect failed: {exc}") from None

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        """SRTCP -> RTCP; raises SrtpAuthError, SrtpReplayError or SrtpMalformedError."""
        try:
            return self._rx.unprotect_rtcp(srtcp)
        except pylibsrtp.Error as exc:
            raise self._count_failure("SRTCP", exc) from None

    def _count_failure(self, what: str, exc: pylibsrtp.Error) -> SrtpError:
        reason = str(exc)
        if reason == _LIBSRTP_AUTH_FAIL:
            self.auth_failures += 1
            return SrtpAuthError(f"{what} authentication failed")
        if reason in (_LIBSRTP_REPLAY_FAIL, _LIBSRTP_REPLAY_OLD):
            self.replays += 1
            return SrtpReplayError(f"{what} replay rejected: {reason}")
        if reason in _LIBSRTP_MALFORMED:
            self.malformed += 1
            return SrtpMalformedError(f"{what} packet header is malformed")
        return SrtpError(f"{what} unprotect failed: {reason}")
