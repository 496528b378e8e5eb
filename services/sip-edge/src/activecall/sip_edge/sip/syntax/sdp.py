"""SDP (RFC 8866) and the offer/answer model (RFC 3264) for the audio calls the edge handles.

Covers what trunks and phones put in their offers: G.711 and friends (RFC 3551), telephone-event
(RFC 4733), SDES keys for SRTP (RFC 4568), rtcp-mux (RFC 5761) and ``a=rtcp`` (RFC 3605).
A parsed description keeps every line it understood, including attributes it has no meaning for,
and serializes them in RFC order, so a conforming description round-trips byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import enum
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

CRLF = "\r\n"
SDP_VERSION = 0

NETTYPE_IN = "IN"
ADDRTYPE_IP4 = "IP4"
ADDRTYPE_IP6 = "IP6"
# RFC 3264 section 8.4: the RFC 2543 way to put a stream on hold.
HOLD_ADDRESS = "0.0.0.0"

PROTO_RTP_AVP = "RTP/AVP"
PROTO_RTP_SAVP = "RTP/SAVP"
SUPPORTED_PROTOS = frozenset({PROTO_RTP_AVP, PROTO_RTP_SAVP})

DEFAULT_PTIME = 20
TELEPHONE_EVENT = "telephone-event"
TELEPHONE_EVENT_PT = 101
# RFC 4733 section 3.2: DTMF digits 0-9, *, #, A-D (0-15) and flash (16).
TELEPHONE_EVENTS = "0-16"

SUITE_AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
SUITE_AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
# RFC 4568 section 6.2: 128-bit master key followed by 112-bit master salt.
SRTP_KEY_SALT_LENGTHS = {SUITE_AES_CM_128_HMAC_SHA1_80: 30, SUITE_AES_CM_128_HMAC_SHA1_32: 30}
SRTP_KEY_LENGTH = 16
KEY_METHOD_INLINE = "inline"

# RFC 3261 section 20.43 warn-codes used when an offer cannot be accepted.
WARN_INCOMPATIBLE_NETWORK_PROTOCOL = 300
WARN_INCOMPATIBLE_ADDRESS_FORMAT = 301
WARN_INCOMPATIBLE_TRANSPORT = 302
WARN_MEDIA_TYPE_UNAVAILABLE = 304
WARN_INCOMPATIBLE_MEDIA_FORMAT = 305
WARN_MISCELLANEOUS = 399
STATUS_NOT_ACCEPTABLE_HERE = 488

_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(Exception):
    """Base class of every SDP error."""


class SdpParseError(SdpError, ValueError):
    """A description, line or attribute value is malformed."""


class NegotiationError(SdpError):
    """An offer or answer cannot be accepted: the edge answers 488 with :attr:`warning`.

    RFC 3264 section 6 and RFC 3261 section 21.4.26 (488 Not Acceptable Here).
    """

    status = STATUS_NOT_ACCEPTABLE_HERE

    def __init__(self, code: int, reason: str, agent: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.agent = agent

    @property
    def warning(self) -> str:
        """The Warning header value: ``warn-code SP warn-agent SP warn-text`` (RFC 3261 section 20.43)."""
        text = self.reason.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.code} {self.agent} "{text}"'


class Direction(enum.StrEnum):
    """Stream direction attributes (RFC 8866 section 6.7), from the point of view of who wrote them."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @classmethod
    def from_flags(cls, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    def reversed(self) -> Direction:
        """The same stream seen from the peer: sendonly becomes recvonly (RFC 3264 section 6.1)."""
        return Direction.from_flags(sends=self.receives, receives=self.sends)

    def __and__(self, other: object) -> Direction:
        if not isinstance(other, Direction):
            return NotImplemented
        return Direction.from_flags(self.sends and other.sends, self.receives and other.receives)


def _parse_int(text: str, what: str) -> int:
    if not text.isdigit():
        raise SdpParseError(f"invalid {what}: {text!r}")
    return int(text)


def _fields(text: str, count: int, what: str) -> list[str]:
    parts = text.split(" ")
    if len(parts) != count or not all(parts):
        raise SdpParseError(f"{what} needs {count} fields separated by single spaces: {text!r}")
    return parts


@dataclass
class Attribute:
    """One ``a=`` line (RFC 8866 section 5.13): a property (``value`` None) or ``name:value``."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, data: str) -> Attribute:
        name, colon, value = data.partition(":")
        if not name or " " in name:
            raise SdpParseError(f"invalid attribute: {data!r}")
        return cls(name, value if colon else None)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass
class Origin:
    """``o=`` line (RFC 8866 section 5.2); ``session_version`` increases on every change."""

    username: str
    session_id: str
    session_version: int
    address: str
    nettype: str = NETTYPE_IN
    addrtype: str = ADDRTYPE_IP4

    @classmethod
    def parse(cls, data: str) -> Origin:
        user, sid, version, nettype, addrtype, address = _fields(data, 6, "o=")
        return cls(user, sid, _parse_int(version, "session version"), address, nettype, addrtype)

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass
class Connection:
    """``c=`` line (RFC 8866 section 5.7). ``address`` keeps any multicast ``/ttl`` suffix."""

    address: str
    nettype: str = NETTYPE_IN
    addrtype: str = ADDRTYPE_IP4

    @classmethod
    def parse(cls, data: str) -> Connection:
        nettype, addrtype, address = _fields(data, 3, "c=")
        return cls(address, nettype, addrtype)

    @property
    def is_hold(self) -> bool:
        """True for ``c=IN IP4 0.0.0.0``, hold in the RFC 2543 style (RFC 3264 section 8.4)."""
        return self.address == HOLD_ADDRESS

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (RFC 8866 section 5.8)."""

    bwtype: str
    value: int

    @classmethod
    def parse(cls, data: str) -> Bandwidth:
        bwtype, colon, value = data.partition(":")
        if not bwtype or not colon:
            raise SdpParseError(f"invalid b= line: {data!r}")
        return cls(bwtype, _parse_int(value, "bandwidth"))

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.value}"


@dataclass
class Timing:
    """``t=`` line and the ``r=`` lines that follow it (RFC 8866 sections 5.9, 5.10)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, data: str) -> Timing:
        start, stop = _fields(data, 2, "t=")
        return cls(_parse_int(start, "start time"), _parse_int(stop, "stop time"))


@dataclass(frozen=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`` (RFC 8866 section 6.6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, data: str) -> RtpMap:
        pt, _, spec = data.partition(" ")
        parts = spec.split("/")
        if len(parts) not in (2, 3) or not parts[0]:
            raise SdpParseError(f"invalid rtpmap: {data!r}")
        channels = _parse_int(parts[2], "channel count") if len(parts) == 3 else None
        return cls(_parse_int(pt, "payload type"), parts[0], _parse_int(parts[1], "clock rate"), channels)

    def __str__(self) -> str:
        tail = "" if self.channels is None else f"/{self.channels}"
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


# RFC 3551 section 6, table 4: audio payload types usable without an rtpmap.
STATIC_RTPMAPS = {
    rtpmap.payload_type: rtpmap
    for rtpmap in (
        RtpMap(0, "PCMU", 8000),
        RtpMap(3, "GSM", 8000),
        RtpMap(4, "G723", 8000),
        RtpMap(5, "DVI4", 8000),
        RtpMap(6, "DVI4", 16000),
        RtpMap(7, "LPC", 8000),
        RtpMap(8, "PCMA", 8000),
        RtpMap(9, "G722", 8000),
        RtpMap(10, "L16", 44100, 2),
        RtpMap(11, "L16", 44100),
        RtpMap(12, "QCELP", 8000),
        RtpMap(13, "CN", 8000),
        RtpMap(14, "MPA", 90000),
        RtpMap(15, "G728", 8000),
        RtpMap(16, "DVI4", 11025),
        RtpMap(17, "DVI4", 22050),
        RtpMap(18, "G729", 8000),
    )
}


@dataclass(frozen=True)
class Codec:
    """A payload format we can use; ``payload_type`` is the number we offer, or the negotiated one."""

    name: str
    clock_rate: int
    payload_type: int
    channels: int = 1
    fmtp: str | None = None

    def matches(self, rtpmap: RtpMap) -> bool:
        """Same encoding (case-insensitive, RFC 8866 section 6.6), clock rate and channel count."""
        return (
            rtpmap.encoding.casefold() == self.name.casefold()
            and rtpmap.clock_rate == self.clock_rate
            and (rtpmap.channels or 1) == self.channels
        )

    def rtpmap(self) -> RtpMap:
        return RtpMap(
            self.payload_type, self.name, self.clock_rate, None if self.channels == 1 else self.channels
        )


PCMU = Codec("PCMU", 8000, 0)
PCMA = Codec("PCMA", 8000, 8)
G722 = Codec("G722", 8000, 9)
TELEPHONE_EVENT_8000 = Codec(TELEPHONE_EVENT, 8000, TELEPHONE_EVENT_PT, fmtp=TELEPHONE_EVENTS)
DEFAULT_CODECS = (PCMU, PCMA)


@dataclass(frozen=True)
class RtcpAttribute:
    """``a=rtcp:<port> [<nettype> <addrtype> <address>]`` (RFC 3605 section 2.1)."""

    port: int
    connection: Connection | None = None

    @classmethod
    def parse(cls, data: str) -> RtcpAttribute:
        port, _, rest = data.partition(" ")
        return cls(_parse_int(port, "rtcp port"), Connection.parse(rest) if rest else None)

    def __str__(self) -> str:
        return f"{self.port}" if self.connection is None else f"{self.port} {self.connection}"


@dataclass(frozen=True)
class CryptoAttribute:
    """``a=crypto:<tag> <suite> inline:<key||salt>[|lifetime][|MKI:length] [session params]`` (RFC 4568).

    Only one inline key per line is supported: several keys need an MKI, which no trunk we meet uses.
    """

    tag: int
    suite: str
    key_salt: bytes = field(repr=False)  # keeps master keys out of logs
    lifetime: str | None = None
    mki: str | None = None
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, data: str) -> CryptoAttribute:
        parts = data.split()
        if len(parts) < 3 or not parts[0].isdigit() or len(parts[0]) > 9:
            raise SdpParseError(f"invalid crypto attribute: {data!r}")
        tag, suite, key_params = parts[0], parts[1], parts[2]
        method, colon, info = key_params.partition(":")
        if method != KEY_METHOD_INLINE or not colon:
            raise SdpParseError(f"unsupported crypto key method: {key_params!r}")
        if ";" in info:
            raise SdpParseError("several keys in one crypto attribute are not supported")
        key, lifetime, mki = _split_key_info(info)
        key_salt = _decode_key(key)
        expected = SRTP_KEY_SALT_LENGTHS.get(suite)
        if expected is not None and len(key_salt) != expected:
            raise SdpParseError(f"{suite} needs {expected} bytes of key and salt, got {len(key_salt)}")
        return cls(int(tag), suite, key_salt, lifetime, mki, tuple(parts[3:]))

    @property
    def key(self) -> bytes:
        return self.key_salt[:SRTP_KEY_LENGTH]

    @property
    def salt(self) -> bytes:
        return self.key_salt[SRTP_KEY_LENGTH:]

    @property
    def usable(self) -> bool:
        """A suite we support with no MKI and no session parameter we would have to honour."""
        return self.suite in SRTP_KEY_SALT_LENGTHS and self.mki is None and not self.session_params

    def __str__(self) -> str:
        inline = base64.b64encode(self.key_salt).decode("ascii")
        for extra in (self.lifetime, self.mki):
            if extra is not None:
                inline += f"|{extra}"
        return " ".join((str(self.tag), self.suite, f"{KEY_METHOD_INLINE}:{inline}", *self.session_params))


def _split_key_info(info: str) -> tuple[str, str | None, str | None]:
    key, *extras = info.split("|")
    if len(extras) > 2:
        raise SdpParseError(f"invalid inline key parameters: {info!r}")
    lifetime = mki = None
    for extra in extras:
        # RFC 4568 section 6.1: the MKI is the only part that contains a colon.
        if ":" in extra:
            mki = extra
        elif mki is None and lifetime is None:
            lifetime = extra
        else:
            raise SdpParseError(f"invalid inline key parameters: {info!r}")
    return key, lifetime, mki


def _decode_key(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except binascii.Error as exc:
        raise SdpParseError(f"invalid base64 key: {text!r}") from exc


def generate_crypto(tag: int = 1, suite: str = SUITE_AES_CM_128_HMAC_SHA1_80) -> CryptoAttribute:
    """A fresh SDES line with a random master key and salt (RFC 4568 section 6.1)."""
    length = SRTP_KEY_SALT_LENGTHS.get(suite)
    if length is None:
        raise ValueError(f"unsupported SRTP suite: {suite}")
    return CryptoAttribute(tag, suite, secrets.token_bytes(length))


class _AttributeList:
    """Attribute access shared by the session and media levels."""

    attributes: list[Attribute]

    def has_attribute(self, name: str) -> bool:
        return any(a.name == name for a in self.attributes)

    def attribute_values(self, name: str) -> list[str]:
        return [a.value for a in self.attributes if a.name == name and a.value is not None]

    def attribute_value(self, name: str) -> str | None:
        values = self.attribute_values(name)
        return values[0] if values else None

    @property
    def direction(self) -> Direction | None:
        """The direction attribute written at this level, None when absent (RFC 8866 section 6.7)."""
        found = [a.name for a in self.attributes if a.name in _DIRECTIONS and a.value is None]
        return Direction(found[-1]) if found else None

    def set_direction(self, direction: Direction) -> None:
        """Write ``direction`` in place of the first direction attribute, or last if none."""
        line = Attribute(direction.value)
        at = next((i for i, a in enumerate(self.attributes) if a.name in _DIRECTIONS), len(self.attributes))
        kept = [a for a in self.attributes if a.name not in _DIRECTIONS]
        self.attributes = [*kept[:at], line, *kept[at:]]

    @property
    def ptime(self) -> int | None:
        value = self.attribute_value("ptime")
        return None if value is None else _parse_int(value, "ptime")

    @property
    def maxptime(self) -> int | None:
        value = self.attribute_value("maxptime")
        return None if value is None else _parse_int(value, "maxptime")


@dataclass
class MediaDescription(_AttributeList):
    """One media section: ``m=`` and its ``i= c= b= k= a=`` lines (RFC 8866 section 5.14)."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    information: str | None = None
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)

    @classmethod
    def parse(cls, data: str | bytes) -> MediaDescription:
        lines = _split_lines(data)
        if not lines or lines[0][0] != "m":
            raise SdpParseError("a media section starts with an m= line")
        return _parse_media(lines)

    @classmethod
    def parse_media_line(cls, data: str) -> MediaDescription:
        parts = data.split(" ")
        if len(parts) < 3 or not all(parts):
            raise SdpParseError(f"invalid m= line: {data!r}")
        port, slash, count = parts[1].partition("/")
        port_count = _parse_int(count, "port count") if slash else None
        return cls(parts[0], _parse_int(port, "port"), parts[2], parts[3:], port_count)

    @property
    def rtcp_mux(self) -> bool:
        return self.has_attribute("rtcp-mux")

    @property
    def rtcp(self) -> RtcpAttribute | None:
        value = self.attribute_value("rtcp")
        return None if value is None else RtcpAttribute.parse(value)

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """The ``a=rtpmap`` of ``payload_type``, else its RFC 3551 static assignment."""
        for value in self.attribute_values("rtpmap"):
            if value.split(" ", 1)[0] == str(payload_type):
                return RtpMap.parse(value)
        return STATIC_RTPMAPS.get(payload_type)

    def rtpmaps(self) -> list[RtpMap]:
        """Every known format of the m= line, in the offerer's order of preference."""
        found = (self.rtpmap(int(f)) for f in self.formats if f.isdigit())
        return [rtpmap for rtpmap in found if rtpmap is not None]

    def fmtp(self, payload_type: int) -> str | None:
        prefix = f"{payload_type} "
        for value in self.attribute_values("fmtp"):
            if value.startswith(prefix):
                return value[len(prefix) :]
        return None

    def crypto(self) -> list[CryptoAttribute]:
        """Every ``a=crypto`` line; raises SdpParseError on the first malformed one."""
        return [CryptoAttribute.parse(value) for value in self.attribute_values("crypto")]

    def lines(self) -> list[str]:
        port = f"{self.port}" if self.port_count is None else f"{self.port}/{self.port_count}"
        out = [f"m={' '.join([self.media, port, self.proto, *self.formats])}"]
        out += _optional("i", self.information) + _optional("c", self.connection)
        out += [f"b={b}" for b in self.bandwidths] + _optional("k", self.key)
        return out + [f"a={a}" for a in self.attributes]

    def __str__(self) -> str:
        return "".join(line + CRLF for line in self.lines())


@dataclass
class SessionDescription(_AttributeList):
    """A whole description (RFC 8866 section 5). ``str()`` gives the wire text with CRLF line ends."""

    origin: Origin
    session_name: str = "-"
    version: int = SDP_VERSION
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=lambda: [Timing()])
    time_zones: str | None = None
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    @classmethod
    def parse(cls, data: str | bytes) -> SessionDescription:
        lines = _split_lines(data)
        if not lines or lines[0] != ("v", str(SDP_VERSION)):
            raise SdpParseError("a session description starts with v=0")
        starts = [i for i, (kind, _) in enumerate(lines) if kind == "m"] + [len(lines)]
        session = _parse_session(lines[1 : starts[0]])
        session.media = [_parse_media(lines[a:b]) for a, b in zip(starts, starts[1:], strict=False)]
        return session

    def media_connection(self, media: MediaDescription) -> Connection | None:
        """The media-level c= line, else the session-level one (RFC 8866 section 5.7)."""
        return media.connection or self.connection

    def media_direction(self, media: MediaDescription) -> Direction:
        """Media-level direction, else session-level, else sendrecv (RFC 8866 section 6.7)."""
        return media.direction or self.direction or Direction.SENDRECV

    def media_ptime(self, media: MediaDescription) -> int | None:
        return media.ptime if media.ptime is not None else self.ptime

    def lines(self) -> list[str]:
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        out += _optional("i", self.information) + _optional("u", self.uri)
        out += [f"e={e}" for e in self.emails] + [f"p={p}" for p in self.phones]
        out += _optional("c", self.connection) + [f"b={b}" for b in self.bandwidths]
        for timing in self.timings:
            out += [f"t={timing.start} {timing.stop}"] + [f"r={r}" for r in timing.repeats]
        out += _optional("z", self.time_zones) + _optional("k", self.key)
        out += [f"a={a}" for a in self.attributes]
        for media in self.media:
            out += media.lines()
        return out

    def __str__(self) -> str:
        return "".join(line + CRLF for line in self.lines())

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")


def _optional(kind: str, value: object | None) -> list[str]:
    return [] if value is None else [f"{kind}={value}"]


# Lines that may appear once per level (RFC 8866 section 5); several c= lines only serve multicast.
_SINGLE_SESSION_LINES = frozenset("osiuczk")
_SINGLE_MEDIA_LINES = frozenset("ick")


def _split_lines(data: str | bytes) -> list[tuple[str, str]]:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpParseError("description is not UTF-8") from exc
    lines = []
    # Bare LF line ends are tolerated: RFC 8866 section 5 asks parsers to accept them.
    for raw in data.split("\n"):
        line = raw.removesuffix("\r")
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpParseError(f"invalid line: {line!r}")
        lines.append((line[0], line[2:]))
    return lines


def _parse_session(lines: list[tuple[str, str]]) -> SessionDescription:
    _reject_duplicates(lines, _SINGLE_SESSION_LINES, "session")
    session = SessionDescription(origin=Origin("-", "0", 0, HOLD_ADDRESS), timings=[])
    for kind, value in lines:
        _apply_session_line(session, kind, value)
    if not {"o", "s"} <= {kind for kind, _ in lines}:
        raise SdpParseError("a session description needs o= and s= lines")
    return session


def _apply_session_line(session: SessionDescription, kind: str, value: str) -> None:
    if kind == "o":
        session.origin = Origin.parse(value)
    elif kind == "s":
        session.session_name = value
    elif kind == "i":
        session.information = value
    elif kind == "u":
        session.uri = value
    elif kind == "e":
        session.emails.append(value)
    elif kind == "p":
        session.phones.append(value)
    elif kind == "c":
        session.connection = Connection.parse(value)
    elif kind == "b":
        session.bandwidths.append(Bandwidth.parse(value))
    elif kind == "t":
        session.timings.append(Timing.parse(value))
    elif kind == "r" and session.timings:
        session.timings[-1].repeats.append(value)
    elif kind == "z":
        session.time_zones = value
    elif kind == "k":
        session.key = value
    elif kind == "a":
        session.attributes.append(Attribute.parse(value))
    else:
        raise SdpParseError(f"unexpected {kind}= line at session level")


def _parse_media(lines: list[tuple[str, str]]) -> MediaDescription:
    media = MediaDescription.parse_media_line(lines[0][1])
    _reject_duplicates(lines[1:], _SINGLE_MEDIA_LINES, "media")
    for kind, value in lines[1:]:
        if kind == "i":
            media.information = value
        elif kind == "c":
            media.connection = Connection.parse(value)
        elif kind == "b":
            media.bandwidths.append(Bandwidth.parse(value))
        elif kind == "k":
            media.key = value
        elif kind == "a":
            media.attributes.append(Attribute.parse(value))
        else:
            raise SdpParseError(f"unexpected {kind}= line in media section")
    return media


def _reject_duplicates(lines: list[tuple[str, str]], single: frozenset[str], level: str) -> None:
    kinds = [kind for kind, _ in lines if kind in single]
    for kind in set(kinds):
        if kinds.count(kind) > 1:
            raise SdpParseError(f"duplicate {kind}= line at {level} level")


# --- Offer/answer (RFC 3264) -------------------------------------------------------------------


class SrtpMode(enum.StrEnum):
    """Whether a call's media is encrypted with SDES SRTP (RFC 4568)."""

    OFF = "off"
    OPTIONAL = "optional"
    REQUIRED = "required"


CryptoFactory = Callable[[int, str], CryptoAttribute]
"""Makes our ``a=crypto`` line for a (tag, suite): the media worker's key, or :func:`generate_crypto`."""


@dataclass(frozen=True)
class AnswerPolicy:
    """What we accept when answering; kept on the :class:`Answer` so a re-offer is answered alike."""

    local_address: str
    local_port: int
    codecs: tuple[Codec, ...] = DEFAULT_CODECS
    srtp: SrtpMode = SrtpMode.OPTIONAL
    crypto_factory: CryptoFactory = generate_crypto
    telephone_event: Codec | None = TELEPHONE_EVENT_8000
    direction: Direction = Direction.SENDRECV
    ptime: int = DEFAULT_PTIME
    warn_agent: str | None = None

    @property
    def agent(self) -> str:
        return self.warn_agent or _host(self.local_address)


@dataclass(frozen=True)
class Answer:
    """The outcome of an offer/answer exchange for the one audio stream we use.

    ``sdp`` is the answer: ours from :func:`negotiate_answer`, the peer's from :func:`process_answer`.
    ``direction`` is what we do (sendonly: we send and do not receive). ``local_crypto`` keys what we
    send, ``remote_crypto`` what we receive.
    """

    sdp: SessionDescription
    media_index: int
    codec: Codec
    telephone_event_pt: int | None
    ptime: int
    remote_address: str
    remote_port: int
    remote_rtcp_port: int
    rtcp_mux: bool
    direction: Direction
    local_crypto: CryptoAttribute | None = None
    remote_crypto: CryptoAttribute | None = None
    policy: AnswerPolicy | None = field(default=None, repr=False, compare=False)

    @property
    def payload_type(self) -> int:
        return self.codec.payload_type

    @property
    def srtp(self) -> bool:
        return self.remote_crypto is not None


def build_offer(
    address: str,
    port: int,
    *,
    codecs: Sequence[Codec] = DEFAULT_CODECS,
    telephone_event: Codec | None = TELEPHONE_EVENT_8000,
    srtp: bool = False,
    crypto: Sequence[CryptoAttribute] | None = None,
    ptime: int = DEFAULT_PTIME,
    maxptime: int | None = DEFAULT_PTIME,
    direction: Direction = Direction.SENDRECV,
    rtcp_mux: bool = False,
    session_id: int | None = None,
    previous: SessionDescription | None = None,
) -> SessionDescription:
    """Our offer for an outbound call or a re-INVITE (RFC 3264 section 5).

    With ``srtp`` the profile is RTP/SAVP and ``crypto`` (default: fresh _80 and _32 keys, tags 1
    and 2) is listed in order of preference. With ``previous`` (the last description we sent in this
    session) the o= line keeps its session id and its version goes up only if the content changed
    (RFC 3264 section 8); pass the same ``crypto`` again to keep the keys unchanged.
    """
    formats = [*codecs, *([telephone_event] if telephone_event else [])]
    media = MediaDescription("audio", port, PROTO_RTP_SAVP if srtp else PROTO_RTP_AVP, [])
    for codec in formats:
        _add_format(media, codec)
    media.attributes.append(Attribute("ptime", str(ptime)))
    if maxptime is not None:
        media.attributes.append(Attribute("maxptime", str(maxptime)))
    if rtcp_mux:
        media.attributes.append(Attribute("rtcp-mux"))
    media.attributes.append(Attribute(direction.value))
    if srtp:
        lines = crypto if crypto is not None else _default_offer_crypto()
        media.attributes += [Attribute("crypto", str(line)) for line in lines]
    sdp = _description(_new_origin(address, session_id, None), address, [media])
    return sdp if previous is None else _versioned(sdp, previous)


def _default_offer_crypto() -> list[CryptoAttribute]:
    return [
        generate_crypto(1, SUITE_AES_CM_128_HMAC_SHA1_80),
        generate_crypto(2, SUITE_AES_CM_128_HMAC_SHA1_32),
    ]


def negotiate_answer(
    offer: SessionDescription,
    local_address: str,
    local_port: int,
    our_codecs: Sequence[Codec] = DEFAULT_CODECS,
    srtp: SrtpMode = SrtpMode.OPTIONAL,
    local_crypto_factory: CryptoFactory = generate_crypto,
    *,
    telephone_event: Codec | None = TELEPHONE_EVENT_8000,
    direction: Direction = Direction.SENDRECV,
    ptime: int = DEFAULT_PTIME,
    session_id: int | None = None,
    session_version: int | None = None,
    warn_agent: str | None = None,
) -> Answer:
    """Answer an offer (RFC 3264 section 6): take the first usable audio stream, reject the rest.

    The codec is the first of the offer's formats that we support, so the offerer's preference
    holds. Every m-line is mirrored; streams we do not take get port 0. The answer direction is
    the offer's reversed (RFC 3264 section 6.1), narrowed by ``direction``. Raises
    :class:`NegotiationError` (answer 488 with its ``warning``) when no stream can be accepted.
    """
    policy = AnswerPolicy(
        local_address,
        local_port,
        tuple(our_codecs),
        srtp,
        local_crypto_factory,
        telephone_event,
        direction,
        ptime,
        warn_agent,
    )
    origin = _new_origin(local_address, session_id, session_version)
    return _answer(offer, policy, origin, local_crypto_factory)


def update_answer(
    previous_answer: Answer,
    new_offer: SessionDescription,
    *,
    local_address: str | None = None,
    local_port: int | None = None,
    direction: Direction | None = None,
) -> Answer:
    """Answer a re-offer in the same session (RFC 3264 section 8).

    Our key is kept while the chosen suite stays the same. The o= version goes up by one only
    when the answer differs from the previous one.
    """
    policy = previous_answer.policy
    if policy is None:
        raise SdpError("only an answer made by negotiate_answer can be updated")
    if len(new_offer.media) < len(previous_answer.sdp.media):
        raise NegotiationError(WARN_MISCELLANEOUS, "a new offer must not remove m-lines", policy.agent)
    policy = replace(
        policy,
        local_address=local_address or policy.local_address,
        local_port=local_port if local_port is not None else policy.local_port,
        direction=direction or policy.direction,
    )
    origin = replace(previous_answer.sdp.origin, address=policy.local_address)
    keys = _keeping_key(previous_answer.local_crypto, policy.crypto_factory)
    answer = _answer(new_offer, policy, origin, keys)
    return replace(answer, sdp=_versioned(answer.sdp, previous_answer.sdp))


def _keeping_key(previous: CryptoAttribute | None, factory: CryptoFactory) -> CryptoFactory:
    def make(tag: int, suite: str) -> CryptoAttribute:
        if previous is not None and previous.suite == suite:
            return replace(previous, tag=tag)
        return factory(tag, suite)

    return make


def process_answer(offer: SessionDescription, answer: SessionDescription) -> Answer:
    """Read the peer's answer to our offer (RFC 3264 section 7): what to send, where, and how.

    Raises :class:`NegotiationError` when the answer rejects our audio stream or does not fit the
    offer (an outbound call then ends with BYE).
    """
    agent = _host(offer.origin.address)
    if len(answer.media) != len(offer.media):
        reason = f"answer has {len(answer.media)} m-lines, offer had {len(offer.media)}"
        raise NegotiationError(WARN_MISCELLANEOUS, reason, agent)
    for index, (ours, theirs) in enumerate(zip(offer.media, answer.media, strict=True)):
        if ours.media == "audio" and ours.port != 0 and theirs.port != 0:
            return _read_answer(offer, answer, index, agent)
    raise NegotiationError(WARN_MEDIA_TYPE_UNAVAILABLE, "audio stream rejected", agent)


# --- Answering ---------------------------------------------------------------------------------


def _answer(
    offer: SessionDescription, policy: AnswerPolicy, origin: Origin, crypto_factory: CryptoFactory
) -> Answer:
    accepted: Answer | None = None
    failure: NegotiationError | None = None
    streams = []
    for index, media in enumerate(offer.media):
        if accepted is None and media.media == "audio" and media.port != 0:
            try:
                accepted = _accept_stream(offer, index, policy, crypto_factory)
            except NegotiationError as exc:
                failure = failure or exc
            else:
                streams.append(accepted.sdp.media[0])
                continue
        streams.append(_rejected(media))
    if accepted is None:
        raise failure or NegotiationError(
            WARN_MEDIA_TYPE_UNAVAILABLE, "no audio stream offered", policy.agent
        )
    sdp = _description(origin, policy.local_address, streams)
    return replace(accepted, sdp=sdp, policy=policy)


def _rejected(media: MediaDescription) -> MediaDescription:
    """RFC 3264 section 6: a refused stream keeps its m-line with port 0."""
    return MediaDescription(media.media, 0, media.proto, list(media.formats) or ["0"])


def _accept_stream(
    offer: SessionDescription, index: int, policy: AnswerPolicy, crypto_factory: CryptoFactory
) -> Answer:
    """Negotiate one stream; the result's ``sdp`` holds only our m-line, for the caller to place."""
    media = offer.media[index]
    agent = policy.agent
    try:
        if media.proto not in SUPPORTED_PROTOS:
            raise NegotiationError(WARN_INCOMPATIBLE_TRANSPORT, f"unsupported transport {media.proto}", agent)
        connection = _remote_connection(offer, media, policy.local_address, agent)
        remote_crypto = _offered_crypto(media, policy.srtp, agent)
        rtpmaps = media.rtpmaps()
        codec = _choose_codec(rtpmaps, policy.codecs, agent)
        offered_te = _telephone_event(rtpmaps, codec.clock_rate) if policy.telephone_event else None
        ptime = offer.media_ptime(media) or DEFAULT_PTIME
        rtcp_port = _rtcp_port(media)
    except SdpParseError as exc:
        raise NegotiationError(WARN_MISCELLANEOUS, str(exc), agent) from exc
    offered = _effective_direction(offer, media, connection)
    direction = offered.reversed() & policy.direction
    local_crypto = None
    if remote_crypto is not None:
        local_crypto = crypto_factory(remote_crypto.tag, remote_crypto.suite)
        assert (local_crypto.tag, local_crypto.suite) == (remote_crypto.tag, remote_crypto.suite)
    stream = MediaDescription("audio", policy.local_port, media.proto, [])
    _add_format(stream, codec)
    if offered_te is not None and policy.telephone_event is not None:
        _add_format(stream, _with_payload_type(policy.telephone_event, offered_te))
    stream.attributes += [Attribute("ptime", str(policy.ptime)), Attribute("maxptime", str(policy.ptime))]
    if media.rtcp_mux:
        stream.attributes.append(Attribute("rtcp-mux"))
    stream.attributes.append(Attribute(direction.value))
    if local_crypto is not None:
        stream.attributes.append(Attribute("crypto", str(local_crypto)))
    return Answer(
        sdp=SessionDescription(origin=offer.origin, media=[stream]),
        media_index=index,
        codec=codec,
        telephone_event_pt=offered_te,
        ptime=ptime,
        remote_address=connection.address,
        remote_port=media.port,
        remote_rtcp_port=media.port if media.rtcp_mux else (rtcp_port or media.port + 1),
        rtcp_mux=media.rtcp_mux,
        direction=direction,
        local_crypto=local_crypto,
        remote_crypto=remote_crypto,
    )


def _remote_connection(
    sdp: SessionDescription, media: MediaDescription, local_address: str, agent: str
) -> Connection:
    connection = sdp.media_connection(media)
    if connection is None:
        raise NegotiationError(WARN_MISCELLANEOUS, "no c= line for the audio stream", agent)
    if connection.nettype != NETTYPE_IN:
        raise NegotiationError(WARN_INCOMPATIBLE_NETWORK_PROTOCOL, f"network {connection.nettype}", agent)
    if connection.addrtype != _addrtype(local_address):
        reason = f"address type {connection.addrtype} not available"
        raise NegotiationError(WARN_INCOMPATIBLE_ADDRESS_FORMAT, reason, agent)
    return connection


def _offered_crypto(media: MediaDescription, mode: SrtpMode, agent: str) -> CryptoAttribute | None:
    """The first usable crypto line, in the offerer's order (RFC 4568 section 7.1.1)."""
    usable = [line for line in _parsable_crypto(media) if line.usable]
    if media.proto == PROTO_RTP_SAVP:
        if mode is SrtpMode.OFF:
            raise NegotiationError(WARN_MISCELLANEOUS, "SRTP is not enabled", agent)
        if not usable:
            raise NegotiationError(WARN_MISCELLANEOUS, "no usable crypto attribute", agent)
        return usable[0]
    # RTP/AVP carrying crypto lines is best-effort SRTP: use it when we may.
    if mode is SrtpMode.REQUIRED and not usable:
        raise NegotiationError(WARN_MISCELLANEOUS, "SRTP required", agent)
    return usable[0] if usable and mode is not SrtpMode.OFF else None


def _parsable_crypto(media: MediaDescription) -> list[CryptoAttribute]:
    # RFC 4568 section 7.1.2: lines the answerer cannot use are ignored, not fatal.
    lines = []
    for value in media.attribute_values("crypto"):
        try:
            lines.append(CryptoAttribute.parse(value))
        except SdpParseError:
            continue
    return lines


def _choose_codec(rtpmaps: list[RtpMap], ours: Sequence[Codec], agent: str) -> Codec:
    """The first of the offered formats (``rtpmaps`` of the m= line, in order) that we support."""
    for rtpmap in rtpmaps:
        for codec in ours:
            if codec.name.casefold() != TELEPHONE_EVENT and codec.matches(rtpmap):
                return _with_payload_type(codec, rtpmap.payload_type)
    raise NegotiationError(WARN_INCOMPATIBLE_MEDIA_FORMAT, "no common codec", agent)


def _with_payload_type(codec: Codec, payload_type: int) -> Codec:
    """``codec`` under another payload type; on the call path, where ``dataclasses.replace`` costs more
    than the rest of the choice."""
    if codec.payload_type == payload_type:
        return codec
    return Codec(codec.name, codec.clock_rate, payload_type, codec.channels, codec.fmtp)


def _telephone_event(rtpmaps: list[RtpMap], clock_rate: int) -> int | None:
    """RFC 4733 section 2.1: the events share the audio codec's clock rate."""
    for rtpmap in rtpmaps:
        if rtpmap.encoding.casefold() == TELEPHONE_EVENT and rtpmap.clock_rate == clock_rate:
            return rtpmap.payload_type
    return None


def _rtcp_port(media: MediaDescription) -> int | None:
    rtcp = media.rtcp
    return None if rtcp is None else rtcp.port


def _effective_direction(sdp: SessionDescription, media: MediaDescription, conn: Connection) -> Direction:
    """The direction the peer wrote; c=0.0.0.0 means it will not receive (RFC 3264 section 8.4)."""
    direction = sdp.media_direction(media)
    if conn.is_hold:
        return Direction.from_flags(sends=direction.sends, receives=False)
    return direction


# --- Reading an answer -------------------------------------------------------------------------


def _read_answer(offer: SessionDescription, answer: SessionDescription, index: int, agent: str) -> Answer:
    ours, theirs = offer.media[index], answer.media[index]
    if theirs.proto != ours.proto:
        raise NegotiationError(
            WARN_INCOMPATIBLE_TRANSPORT, f"answer changed {ours.proto} to {theirs.proto}", agent
        )
    try:
        connection = _remote_connection(answer, theirs, offer.origin.address, agent)
        codec = _answered_codec(ours, theirs, agent)
        offered_te = _telephone_event(ours.rtpmaps(), codec.clock_rate)
        te = _telephone_event(theirs.rtpmaps(), codec.clock_rate) if offered_te else None
        local_crypto, remote_crypto = _answered_crypto(ours, theirs, agent)
        ptime = answer.media_ptime(theirs) or DEFAULT_PTIME
        rtcp_port = _rtcp_port(theirs)
    except SdpParseError as exc:
        raise NegotiationError(WARN_MISCELLANEOUS, str(exc), agent) from exc
    rtcp_mux = ours.rtcp_mux and theirs.rtcp_mux
    return Answer(
        sdp=answer,
        media_index=index,
        codec=codec,
        telephone_event_pt=te,
        ptime=ptime,
        remote_address=connection.address,
        remote_port=theirs.port,
        remote_rtcp_port=theirs.port if rtcp_mux else (rtcp_port or theirs.port + 1),
        rtcp_mux=rtcp_mux,
        direction=_effective_direction(answer, theirs, connection).reversed(),
        local_crypto=local_crypto,
        remote_crypto=remote_crypto,
    )


def _answered_codec(ours: MediaDescription, theirs: MediaDescription, agent: str) -> Codec:
    offered = [
        Codec(r.encoding, r.clock_rate, r.payload_type, r.channels or 1)
        for r in ours.rtpmaps()
        if r.encoding.casefold() != TELEPHONE_EVENT
    ]
    for rtpmap in theirs.rtpmaps():
        for codec in offered:
            if codec.matches(rtpmap):
                return replace(codec, payload_type=rtpmap.payload_type, fmtp=theirs.fmtp(rtpmap.payload_type))
    raise NegotiationError(WARN_INCOMPATIBLE_MEDIA_FORMAT, "answer has none of the offered codecs", agent)


def _answered_crypto(
    ours: MediaDescription, theirs: MediaDescription, agent: str
) -> tuple[CryptoAttribute | None, CryptoAttribute | None]:
    offered = {line.tag: line for line in ours.crypto()}
    answered = theirs.crypto()
    if not answered:
        if ours.proto == PROTO_RTP_SAVP:
            raise NegotiationError(WARN_MISCELLANEOUS, "answer has no crypto attribute", agent)
        return None, None
    # RFC 4568 section 7.1.3: exactly one line, echoing the tag and suite of an offered one.
    if len(answered) != 1 or answered[0].tag not in offered:
        raise NegotiationError(WARN_MISCELLANEOUS, "answer crypto does not match the offer", agent)
    local, remote = offered[answered[0].tag], answered[0]
    if local.suite != remote.suite or not remote.usable:
        raise NegotiationError(WARN_MISCELLANEOUS, "answer crypto does not match the offer", agent)
    return local, remote


# --- Helpers -----------------------------------------------------------------------------------


def _add_format(media: MediaDescription, codec: Codec) -> None:
    media.formats.append(str(codec.payload_type))
    media.attributes.append(Attribute("rtpmap", str(codec.rtpmap())))
    if codec.fmtp is not None:
        media.attributes.append(Attribute("fmtp", f"{codec.payload_type} {codec.fmtp}"))


def _new_origin(address: str, session_id: int | None, version: int | None) -> Origin:
    sid = session_id if session_id is not None else secrets.randbelow(2**31) + 1
    # Both numbers start equal, as most user agents do; the version then counts changes.
    return Origin("-", str(sid), sid if version is None else version, address, addrtype=_addrtype(address))


def _description(origin: Origin, address: str, media: list[MediaDescription]) -> SessionDescription:
    connection = Connection(address, addrtype=_addrtype(address))
    return SessionDescription(origin=origin, connection=connection, media=media)


def _versioned(sdp: SessionDescription, previous: SessionDescription) -> SessionDescription:
    """RFC 3264 section 8: same session id; the version increases only when something changed."""
    unchanged = replace(sdp, origin=previous.origin)
    if str(unchanged) == str(previous):
        return unchanged
    origin = replace(previous.origin, session_version=previous.origin.session_version + 1)
    return replace(sdp, origin=replace(origin, address=sdp.origin.address, addrtype=sdp.origin.addrtype))


def _addrtype(address: str) -> str:
    return ADDRTYPE_IP6 if ":" in address else ADDRTYPE_IP4


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address
