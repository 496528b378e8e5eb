"""SIP requests and responses: parsing, framing, serialization and the checks a UAS makes before acting
on a request (RFC 3261 sections 7, 8.2, 18.3 and 20; RFC 5626 section 3.5.1 keep-alives).

Parsing reads the start line and splits and unfolds the header fields; field values stay text in an
ordered, case-insensitive :class:`Headers` store and are parsed only when asked for (``msg.cseq``,
``msg.vias``, ...), so a message that is only relayed or dropped costs little. Content-Length is the one
field read at once, since it frames the body. Every malformation raises :class:`SipParseError`; a whole
message that does not parse raises its :class:`MalformedMessage` kind.

A parsed value is kept on the :class:`Headers` it came from until a field of its name is added, set or
removed, so the layers that each read From, To, Via or CSeq of one message parse it once between them.
The parsed types are frozen dataclasses; lists come back as fresh copies.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar, cast

from activecall.sip_edge.sip.syntax.headers import (
    BRANCH_MAGIC_COOKIE,
    CANONICAL_NAMES,
    CONTACT_WILDCARD,
    CSeq,
    Via,
    canonical_name,
    header_key,
    is_sip_date,
    parse_call_id,
    parse_contact,
    parse_content_length,
    parse_max_forwards,
    parse_media_type,
    parse_name_addr_list,
    parse_token_list,
    parse_vias,
    split_header_values,
)
from activecall.sip_edge.sip.syntax.uri import (
    SCHEME_SIP,
    SCHEME_SIPS,
    SCHEME_TEL,
    TOKEN,
    NameAddr,
    OpaqueUri,
    SipParseError,
    SipUri,
    Uri,
    parse_uri,
)

__all__ = [
    "Headers",
    "KeepAlive",
    "MalformedMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "StreamFramer",
    "make_response",
    "parse_message",
    "validate_request",
    "validate_response",
]

SIP_VERSION = "SIP/2.0"
CRLF = "\r\n"
# Largest UDP payload; RFC 3261 section 18.1.1 keeps real messages far below it.
MAX_DATAGRAM_SIZE = 65535
MAX_STREAM_MESSAGE_SIZE = 65536
# RFC 5626 section 3.5.1: a client pings with a double CRLF, the server answers with one CRLF.
KEEPALIVE_PING = b"\r\n\r\n"
KEEPALIVE_PONG = b"\r\n"

KNOWN_METHODS = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK")
    + ("SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE")
)
DEFAULT_URI_SCHEMES = frozenset({SCHEME_SIP, SCHEME_SIPS, SCHEME_TEL})
DEFAULT_CONTENT_TYPES = frozenset({"application/sdp"})

STATUS_TRYING = 100
STATUS_BAD_REQUEST = 400
STATUS_NOT_ACCEPTABLE = 406
STATUS_UNSUPPORTED_MEDIA_TYPE = 415
STATUS_UNSUPPORTED_URI_SCHEME = 416
STATUS_BAD_EXTENSION = 420
STATUS_TOO_MANY_HOPS = 483
STATUS_NOT_IMPLEMENTED = 501
STATUS_VERSION_NOT_SUPPORTED = 505

# RFC 3261 section 21 default reason phrases.
REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


class Headers:
    """Ordered header fields (RFC 3261 section 7.3): duplicates and order kept, names matched
    case-insensitively with compact forms (``v``, ``i``, ...) equal to their long form.

    Values are stored unfolded and stripped, as text; ``get_all`` returns one entry per field line,
    ``get_list`` the comma-separated elements across all of them.
    """

    __slots__ = ("_fields", "_parsed")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str, str]] = []
        # Parsed field values by accessor name (see _HeaderAccess), dropped when their field changes.
        self._parsed: dict[str, object] | None = None
        for name, value in fields:
            self.add(name, value)

    @classmethod
    def _trusted(cls, fields: list[tuple[str, str, str]]) -> Headers:
        headers = cls.__new__(cls)
        headers._fields = fields
        headers._parsed = None
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first field called ``name``."""
        key = header_key(name)
        for k, _, value in self._fields:
            if k == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Values of every field called ``name``, in message order."""
        key = header_key(name)
        return [value for k, _, value in self._fields if k == key]

    def get_list(self, name: str) -> list[str]:
        """Comma-separated elements of every field called ``name`` (RFC 3261 section 7.3.1)."""
        return [item for value in self.get_all(name) for item in split_header_values(value)]

    def add(self, name: str, value: str) -> None:
        """Append a field; the name is printed in its canonical spelling."""
        if TOKEN.fullmatch(name) is None:
            raise ValueError(f"bad header name {name!r}")
        if "\r" in value or "\n" in value:
            raise ValueError("header values cannot hold CR or LF")
        key = header_key(name)
        self._fields.append((key, canonical_name(name), value.strip(" \t")))
        self._changed(key)

    def set(self, name: str, value: str) -> None:
        """Replace the first field called ``name`` in place and drop the others, or append it."""
        self.add(name, value)
        new = self._fields.pop()
        fields: list[tuple[str, str, str]] = []
        placed = False
        for existing in self._fields:
            if existing[0] != new[0]:
                fields.append(existing)
            elif not placed:
                fields.append(new)
                placed = True
        if not placed:
            fields.append(new)
        self._fields = fields

    def replace_first(self, name: str, value: str) -> None:
        """Replace the value of the first field called ``name`` in place, keeping the others; raises
        ``KeyError`` when there is none."""
        key = header_key(name)
        for index, (k, printed, _) in enumerate(self._fields):
            if k == key:
                if "\r" in value or "\n" in value:
                    raise ValueError("header values cannot hold CR or LF")
                self._fields[index] = (k, printed, value.strip(" \t"))
                self._changed(key)
                return
        raise KeyError(name)

    def remove(self, name: str) -> int:
        """Drop every field called ``name``; returns how many there were."""
        key = header_key(name)
        before = len(self._fields)
        self._fields = [f for f in self._fields if f[0] != key]
        self._changed(key)
        return before - len(self._fields)

    def _changed(self, key: str) -> None:
        """Forget what was parsed from the fields with lookup key ``key``."""
        parsed = self._parsed
        if parsed:
            for name in [name for name in parsed if _PARSED_FROM[name] == key]:
                del parsed[name]

    def count(self, name: str) -> int:
        key = header_key(name)
        return sum(1 for k, _, _ in self._fields if k == key)

    def copy(self) -> Headers:
        return Headers._trusted(list(self._fields))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        return any(k == key for k, _, _ in self._fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for _, name, value in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._fields] == [(k, v) for k, _, v in other._fields]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({[(n, v) for _, n, v in self._fields]!r})"


_T = TypeVar("_T")


class _HeaderAccess:
    """Parsed views of the header fields every message has, each parsed once: the value is kept on the
    :class:`Headers` until a field of that name is added, set or removed. A field that does not parse
    raises on every access."""

    __slots__ = ()
    headers: Headers
    body: bytes

    def _single(self, name: str) -> str:
        values = self.headers.get_all(name)
        if len(values) != 1:
            raise SipParseError(f"{'Missing' if not values else 'Multiple'} {canonical_name(name)}")
        return values[0]

    def _cached(self, key: str, parse: Callable[[_HeaderAccess], _T]) -> _T:
        headers = self.headers
        cache = headers._parsed
        if cache is None:
            cache = headers._parsed = {}
        elif key in cache:
            return cast(_T, cache[key])
        value = cache[key] = parse(self)
        return value

    @property
    def call_id(self) -> str:
        """Call-ID (RFC 3261 section 20.8)."""
        return self._cached("call_id", _parse_call_id)

    @property
    def cseq(self) -> CSeq:
        """CSeq (RFC 3261 section 20.16)."""
        return self._cached("cseq", _parse_cseq)

    @property
    def from_(self) -> NameAddr:
        """From (RFC 3261 section 20.20)."""
        return self._cached("from", _parse_from)

    @property
    def to(self) -> NameAddr:
        """To (RFC 3261 section 20.39)."""
        return self._cached("to", _parse_to)

    @property
    def vias(self) -> list[Via]:
        """Every Via value, topmost first (RFC 3261 section 20.42)."""
        return list(self._cached("vias", _parse_all_vias))

    @property
    def top_via(self) -> Via:
        """The topmost Via value, parsed without touching the others."""
        cache = self.headers._parsed
        if cache is not None and "vias" in cache:
            return cast(tuple[Via, ...], cache["vias"])[0]
        return self._cached("top_via", _parse_top_via)

    def replace_top_via(self, via: Via) -> None:
        """Put ``via`` in place of the topmost Via value, the others kept as they are (a server
        transport stamping ``received``, RFC 3261 section 18.2.1). ``via`` stays parsed unless its
        parameters would not pass the parser, which then refuses the field when it is read."""
        value = self.headers.get("Via")
        if value is None:
            raise SipParseError("Missing Via")
        items = split_header_values(value)
        items[0] = str(via)
        self.headers.replace_first("Via", ", ".join(items))
        try:
            via._check_params()
        except SipParseError:
            return
        self.headers._parsed = {"top_via": via}

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (RFC 3261 section 20.22), ``None`` when absent."""
        return self._cached("max_forwards", _parse_max_forwards)

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values (RFC 3261 section 20.10); empty when absent or for the ``*`` wildcard, which
        :attr:`contact_wildcard` tells apart."""
        return list(self._cached("contacts", _parse_contacts))

    @property
    def contact_wildcard(self) -> bool:
        """True for ``Contact: *`` (RFC 3261 section 10.2.2)."""
        values = self.headers.get_all("Contact")
        return len(values) == 1 and values[0] == CONTACT_WILDCARD

    @property
    def routes(self) -> list[NameAddr]:
        """Route set from the Route fields (RFC 3261 section 20.34)."""
        return list(self._cached("routes", _parse_routes))

    @property
    def record_routes(self) -> list[NameAddr]:
        """Record-Route values (RFC 3261 section 20.30)."""
        return list(self._cached("record_routes", _parse_record_routes))

    @property
    def content_type(self) -> str | None:
        """Lower-case ``type/subtype`` of the Content-Type field (RFC 3261 section 20.15)."""
        return self._cached("content_type", _parse_content_type)


# The lookup key of the fields each _HeaderAccess value is parsed from.
_PARSED_FROM = {
    "call_id": "call-id",
    "cseq": "cseq",
    "from": "from",
    "to": "to",
    "vias": "via",
    "top_via": "via",
    "max_forwards": "max-forwards",
    "contacts": "contact",
    "routes": "route",
    "record_routes": "record-route",
    "content_type": "content-type",
}

# The parsers behind _HeaderAccess; module functions, so a cached access allocates nothing.


def _parse_call_id(message: _HeaderAccess) -> str:
    return parse_call_id(message._single("Call-ID"))


def _parse_cseq(message: _HeaderAccess) -> CSeq:
    return CSeq.parse(message._single("CSeq"))


def _parse_from(message: _HeaderAccess) -> NameAddr:
    return NameAddr.parse(message._single("From"))


def _parse_to(message: _HeaderAccess) -> NameAddr:
    return NameAddr.parse(message._single("To"))


def _parse_all_vias(message: _HeaderAccess) -> tuple[Via, ...]:
    values = message.headers.get_all("Via")
    if not values:
        raise SipParseError("Missing Via")
    cache = message.headers._parsed
    top = cache.get("top_via") if cache is not None else None
    if isinstance(top, Via):
        # The top value was parsed already (transaction matching does that first): parse the rest.
        first = [top, *(Via.parse(item) for item in split_header_values(values[0])[1:])]
        return (*first, *(via for value in values[1:] for via in parse_vias(value)))
    return tuple(via for value in values for via in parse_vias(value))


def _parse_top_via(message: _HeaderAccess) -> Via:
    value = message.headers.get("Via")
    if value is None:
        raise SipParseError("Missing Via")
    return Via.parse(split_header_values(value)[0])


def _parse_max_forwards(message: _HeaderAccess) -> int | None:
    if "Max-Forwards" not in message.headers:
        return None
    return parse_max_forwards(message._single("Max-Forwards"))


def _parse_contacts(message: _HeaderAccess) -> tuple[NameAddr, ...]:
    values = message.headers.get_all("Contact")
    result: list[NameAddr] = []
    for value in values:
        parsed = parse_contact(value)
        if isinstance(parsed, str):
            if len(values) != 1:
                raise SipParseError("Wildcard Contact mixed with others")
            return ()
        result += parsed
    return tuple(result)


def _parse_routes(message: _HeaderAccess) -> tuple[NameAddr, ...]:
    return tuple(r for value in message.headers.get_all("Route") for r in parse_name_addr_list(value))


def _parse_record_routes(message: _HeaderAccess) -> tuple[NameAddr, ...]:
    values = message.headers.get_all("Record-Route")
    return tuple(r for value in values for r in parse_name_addr_list(value))


def _parse_content_type(message: _HeaderAccess) -> str | None:
    value = message.headers.get("Content-Type")
    return None if value is None else parse_media_type(value)


@dataclass(slots=True)
class SipRequest(_HeaderAccess):
    """A SIP request (RFC 3261 section 7.1). ``bytes(request)`` prints it with a correct Content-Length."""

    method: str
    uri: Uri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    @classmethod
    def parse(cls, data: bytes) -> SipRequest:
        """Parse a request datagram; see :func:`parse_message`."""
        message = parse_message(data)
        if not isinstance(message, SipRequest):
            raise SipParseError("Not a request")
        return message

    @property
    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __bytes__(self) -> bytes:
        return _serialize(self.start_line, self.headers, self.body)


@dataclass(slots=True)
class SipResponse(_HeaderAccess):
    """A SIP response (RFC 3261 section 7.2). ``bytes(response)`` prints it with a correct
    Content-Length."""

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    @classmethod
    def parse(cls, data: bytes) -> SipResponse:
        """Parse a response datagram; see :func:`parse_message`."""
        message = parse_message(data)
        if not isinstance(message, SipResponse):
            raise SipParseError("Not a response")
        return message

    @property
    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __bytes__(self) -> bytes:
        return _serialize(self.start_line, self.headers, self.body)


SipMessage = SipRequest | SipResponse


class MalformedMessage(SipParseError):
    """A message that does not parse. ``partial`` is the request as far as it was read when its start
    line and its Via, Call-ID and CSeq header fields could be read, so a server can still answer it with
    a 400 (RFC 3261 section 8.2.6); it is ``None`` otherwise.
    """

    def __init__(self, reason: str, partial: SipRequest | None = None) -> None:
        super().__init__(reason)
        self.partial = partial


def _serialize(start_line: str, headers: Headers, body: bytes) -> bytes:
    lines = [start_line]
    length_written = False
    for key, name, value in headers._fields:
        if key == "content-length":
            if length_written:
                continue
            value = str(len(body))
            length_written = True
        lines.append(f"{name}: {value}")
    if not length_written:
        lines.append(f"Content-Length: {len(body)}")
    lines += ("", "")
    return CRLF.join(lines).encode("utf-8", "surrogateescape") + body


# -- parsing -------------------------------------------------------------------------------------------


def _field_names() -> dict[str, tuple[str, str]]:
    """Spellings of known names (as printed, lower case, compact forms) to (lookup key, printed name)."""
    names: dict[str, tuple[str, str]] = {}
    for lower, printed in CANONICAL_NAMES.items():
        info = (header_key(lower), printed)
        names[lower] = names[lower.upper()] = info
        names.setdefault(printed, info)
    return names


_FIELD_NAMES = _field_names()
_FOLD = re.compile(r"\r\n[ \t]+")


def _parse_fields(text: str) -> tuple[list[tuple[str, str, str]], str | None]:
    """Header lines (the head after the start line) to (key, printed name, value), with LWS folding
    undone (RFC 3261 section 7.3.1). A bad line is skipped and reported so the rest can still serve a
    400."""
    error = None
    if "\r\n " in text or "\r\n\t" in text:
        text = _FOLD.sub(" ", text)
    if text[:1] in (" ", "\t"):
        error = "Folded line before first header"
    lines = text.split(CRLF)
    # Every CR and LF belongs to a CRLF exactly when each count equals the number of line breaks.
    if text.count("\r") != len(lines) - 1 or text.count("\n") != len(lines) - 1:
        error = error or "Bare CR or LF"
        lines = [line for line in lines if "\r" not in line and "\n" not in line]
    fields: list[tuple[str, str, str]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        info = _FIELD_NAMES.get(name)
        if info is None:
            name = name.strip(" \t")
            lower = name.lower()
            info = _FIELD_NAMES.get(lower)
            if info is None:
                if TOKEN.fullmatch(name) is None:
                    error = error or "Bad header line"
                    continue
                info = (lower, name)
        if not colon:
            error = error or "Bad header line"
            continue
        fields.append((info[0], info[1], value.strip(" \t")))
    return fields, error


def _parse_version(text: str) -> str:
    name, slash, number = text.partition("/")
    major, dot, minor = number.partition(".")
    if name.upper() != "SIP" or not dot or not _is_digits(major) or not _is_digits(minor):
        raise SipParseError("Bad SIP version")
    return f"SIP/{number}"


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _parse_start_line(line: str, headers: Headers) -> SipMessage:
    """Request-Line or Status-Line (RFC 3261 sections 7.1 and 7.2): single SP separators, no trailing
    whitespace (RFC 4475 sections 3.1.2.9 and 3.1.2.10 reject the variants)."""
    if "\r" in line or "\n" in line:
        raise SipParseError("Bad start line")
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if len(code) != 3 or not _is_digits(code) or not 100 <= int(code) <= 699:
            raise SipParseError("Bad status code")
        return SipResponse(int(code), reason, headers, b"", _parse_version(version))
    parts = line.split(" ")
    if len(parts) != 3 or TOKEN.fullmatch(parts[0]) is None:
        raise SipParseError("Bad request line")
    version = _parse_version(parts[2])
    try:
        uri = parse_uri(parts[1])
    except SipParseError:
        raise SipParseError("Bad Request-URI") from None
    return SipRequest(parts[0], uri, headers, b"", version)


def _answerable(message: SipMessage | None) -> SipRequest | None:
    """The message as a ``partial`` for a 400: only requests that name their transaction."""
    if not isinstance(message, SipRequest):
        return None
    headers = message.headers
    if "Via" in headers and "Call-ID" in headers and "CSeq" in headers:
        return message
    return None


def _partial_request(start_line: str, headers: Headers) -> SipRequest | None:
    """Best-effort request for a start line that did not parse, keeping the raw Request-URI text."""
    if start_line[:4].upper() == "SIP/":
        return None
    parts = start_line.split(" ")
    method = parts[0] if TOKEN.fullmatch(parts[0]) else ""
    return _answerable(SipRequest(method, OpaqueUri(" ".join(parts[1:-1])), headers))


def _parse_head(head: bytes) -> SipMessage:
    """Start line and header fields; raises with ``partial`` set when the fields were readable."""
    start_line, _, rest = head.decode("utf-8", "surrogateescape").partition(CRLF)
    fields, error = _parse_fields(rest) if rest else ([], None)
    headers = Headers._trusted(fields)
    try:
        message = _parse_start_line(start_line, headers)
    except SipParseError as exc:
        raise MalformedMessage(exc.reason, _partial_request(start_line, headers)) from None
    if error is not None:
        raise MalformedMessage(error, _answerable(message))
    return message


def _content_length(message: SipMessage) -> int | None:
    """Content-Length; several fields must agree (RFC 4475 section 3.3.9)."""
    values = message.headers.get_all("Content-Length")
    if not values:
        return None
    try:
        lengths = {parse_content_length(value) for value in values}
    except SipParseError as exc:
        raise MalformedMessage(exc.reason, _answerable(message)) from None
    if len(lengths) > 1:
        raise MalformedMessage("Conflicting Content-Length", _answerable(message))
    return lengths.pop()


def _skip_crlf(data: bytes) -> int:
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    return start


def parse_message(data: bytes, max_size: int = MAX_DATAGRAM_SIZE) -> SipMessage:
    """Parse one SIP message from a datagram (RFC 3261 sections 7 and 18.3).

    Leading CRLFs are skipped. Without Content-Length the body is the rest of the datagram; octets past
    Content-Length are discarded; a Content-Length beyond the datagram, negative, malformed or
    conflicting is an error (RFC 4475 sections 3.1.1.11, 3.1.2.2, 3.1.2.3, 3.3.9).
    """
    if len(data) > max_size:
        raise MalformedMessage("Message too large")
    start = _skip_crlf(data)
    if start == len(data):
        raise MalformedMessage("Empty message")
    end = data.find(b"\r\n\r\n", start)
    head = data[start:end] if end >= 0 else data[start:].removesuffix(b"\r\n")
    message = _parse_head(head)
    if end < 0:
        raise MalformedMessage("No empty line after headers", _answerable(message))
    length = _content_length(message)
    body = data[end + 4 :]
    if length is not None:
        if length > len(body):
            raise MalformedMessage("Content-Length beyond end of message", _answerable(message))
        body = body[:length]
    message.body = body
    return message


class KeepAlive(enum.Enum):
    """Keep-alive seen between messages on a stream."""

    # RFC 5626 section 3.5.1: a double-CRLF ping; answer with KEEPALIVE_PONG.
    PING = "ping"


FramedItem = SipRequest | SipResponse | KeepAlive | MalformedMessage


class StreamFramer:
    """Cuts SIP messages out of a TCP or TLS byte stream by Content-Length (RFC 3261 section 18.3).

    :meth:`feed` returns, in order, every complete message, a :attr:`KeepAlive.PING` for each double-CRLF
    ping, and a :class:`MalformedMessage` (not raised) for a message that was framed but is malformed, so the
    caller can answer it (``error.partial``) and keep the connection. Framing failures (no usable
    Content-Length, a message over ``max_size``) are raised (see :meth:`feed`); the stream cannot be
    resynchronized, so :attr:`broken` turns true and the connection has to be closed.
    """

    def __init__(self, max_size: int = MAX_STREAM_MESSAGE_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._scanned = 0
        self._pending: tuple[SipMessage | MalformedMessage, int, int] | None = None
        self._failure: MalformedMessage | None = None

    @property
    def broken(self) -> bool:
        """True once framing failed: the connection has to be closed."""
        return self._failure is not None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet framed."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[FramedItem]:
        """Add received bytes; return what they completed.

        A framing failure is raised at once if nothing was completed before it in this call; otherwise
        the completed items are returned first, :attr:`broken` is already true, and the next call raises.
        """
        if self._failure is not None:
            raise self._failure
        self._buffer += data
        items: list[FramedItem] = []
        try:
            while (item := self._next()) is not None:
                items.append(item)
        except MalformedMessage as exc:
            self._failure = exc
            self._buffer.clear()
            if not items:
                raise
        return items

    def _next(self) -> FramedItem | None:
        buffer = self._buffer
        while self._pending is None and buffer[:2] == b"\r\n":
            if buffer[:4] == KEEPALIVE_PING:
                del buffer[:4]
                return KeepAlive.PING
            if len(buffer) < 4 and KEEPALIVE_PING.startswith(buffer):
                return None  # may be the start of a ping split across reads
            del buffer[:2]
        if self._pending is None:
            self._pending = self._frame_head()
            if self._pending is None:
                return None
        item, head_length, body_length = self._pending
        total = head_length + body_length
        if len(buffer) < total:
            return None
        body = bytes(buffer[head_length:total])
        del buffer[:total]
        self._pending = None
        self._scanned = 0
        if not isinstance(item, MalformedMessage):
            item.body = body
        return item

    def _frame_head(self) -> tuple[SipMessage | MalformedMessage, int, int] | None:
        buffer = self._buffer
        end = buffer.find(KEEPALIVE_PING, max(0, self._scanned - 3))
        if end < 0:
            if len(buffer) > self.max_size:
                raise MalformedMessage("Header section too large")
            self._scanned = len(buffer)
            return None
        head = bytes(buffer[:end])
        item: SipMessage | MalformedMessage
        try:
            item = _parse_head(head)
        except MalformedMessage as exc:
            item = exc
        if isinstance(item, MalformedMessage):
            length = _raw_content_length(head)
            partial = item.partial
        else:
            length = _content_length(item)
            partial = _answerable(item)
        if length is None:
            raise MalformedMessage("Missing Content-Length on stream", partial)
        if end + 4 + length > self.max_size:
            raise MalformedMessage("Message too large", partial)
        return item, end + 4, length


def _raw_content_length(head: bytes) -> int | None:
    """Content-Length of a head that did not parse as a message: framing still needs it."""
    fields, _ = _parse_fields(head.decode("utf-8", "surrogateescape").partition(CRLF)[2])
    try:
        lengths = {parse_content_length(value) for key, _, value in fields if key == "content-length"}
    except SipParseError as exc:
        raise MalformedMessage(exc.reason) from None
    if len(lengths) > 1:
        raise MalformedMessage("Conflicting Content-Length")
    return lengths.pop() if lengths else None


# -- UAS checks ------------------------------------------------------------------------------------------


def validate_request(
    request: SipRequest,
    *,
    endpoint: bool = False,
    methods: Collection[str] = KNOWN_METHODS,
    uri_schemes: Collection[str] = DEFAULT_URI_SCHEMES,
    extensions: Collection[str] = frozenset(),
    content_types: Collection[str] = DEFAULT_CONTENT_TYPES,
) -> tuple[int, str] | None:
    """The error response a UAS owes a parsed request before processing it, or ``None`` if it may go on
    (RFC 3261 section 8.2, in its order; RFC 4475 section 3 for the torture cases).

    ``endpoint`` skips the Max-Forwards 0 check (RFC 4475 section 3.3.11: only a forwarding element
    answers 483). ``methods``, ``uri_schemes``, ``extensions`` and ``content_types`` describe what the
    caller implements. A missing Max-Forwards is tolerated for RFC 2543 peers (RFC 4475 section 3.4.1).
    """
    if request.version != SIP_VERSION:
        return STATUS_VERSION_NOT_SUPPORTED, "Version Not Supported"
    try:
        problem = _syntax_problem(request)
        if problem is not None:
            return STATUS_BAD_REQUEST, problem
        return _semantic_problem(request, endpoint, methods, uri_schemes, extensions, content_types)
    except SipParseError as exc:
        return STATUS_BAD_REQUEST, exc.reason


def _read(name: str, parse: Callable[[], _T]) -> _T:
    """Run a field accessor, naming the field in the error."""
    try:
        return parse()
    except SipParseError as exc:
        if name in exc.reason:
            raise
        raise SipParseError(f"{exc.reason} in {name}") from None


def _syntax_problem(request: SipRequest) -> str | None:
    """400-class defects: missing, repeated or malformed fields (RFC 3261 sections 8.1.1 and 20)."""
    vias = _read("Via", lambda: request.vias)
    to = _read("To", lambda: request.to)
    _read("From", lambda: request.from_)
    _read("Call-ID", lambda: request.call_id)
    _read("CSeq", lambda: request.cseq)
    _read("Max-Forwards", lambda: request.max_forwards)
    _read("Contact", lambda: request.contacts)
    _read("Route", lambda: request.routes)
    _read("Record-Route", lambda: request.record_routes)
    _read("Content-Type", lambda: request.content_type)
    if vias[0].branch == BRANCH_MAGIC_COOKIE:
        return "Empty Via branch"  # RFC 4475 section 3.2.1
    date = request.headers.get("Date")
    if date is not None and not is_sip_date(date):
        return "Bad Date"  # RFC 4475 section 3.1.2.12
    if isinstance(request.uri, SipUri) and request.uri.headers:
        return "Headers in Request-URI"  # RFC 3261 section 19.1.5, RFC 4475 section 3.1.2.11
    length = request.headers.get("Content-Length")
    if length is not None and parse_content_length(length) != len(request.body):
        return "Content-Length mismatch"
    if request.body and "Content-Type" not in request.headers:
        return "Body without Content-Type"  # RFC 3261 section 20.15
    if request.method == "REGISTER" and not (isinstance(to.uri, SipUri) and to.uri.scheme != SCHEME_TEL):
        return "To is not a SIP URI"  # RFC 3261 section 10.2, RFC 4475 section 3.3.4
    return None


def _semantic_problem(
    request: SipRequest,
    endpoint: bool,
    methods: Collection[str],
    uri_schemes: Collection[str],
    extensions: Collection[str],
    content_types: Collection[str],
) -> tuple[int, str] | None:
    method = request.method
    if method not in methods:
        return STATUS_NOT_IMPLEMENTED, "Not Implemented"  # RFC 3261 section 8.2.1, RFC 4475 3.1.2.18
    if request.cseq.method != method:
        return STATUS_BAD_REQUEST, "CSeq method mismatch"  # RFC 4475 section 3.1.2.17
    if not endpoint and request.max_forwards == 0:
        return STATUS_TOO_MANY_HOPS, "Too Many Hops"  # RFC 3261 section 16.3 item 2
    if request.uri.scheme not in uri_schemes:
        return STATUS_UNSUPPORTED_URI_SCHEME, "Unsupported URI Scheme"  # RFC 3261 section 8.2.2.1
    if method not in ("ACK", "CANCEL"):
        required = [tag for value in request.headers.get_all("Require") for tag in parse_token_list(value)]
        if any(tag not in extensions for tag in required):
            return STATUS_BAD_EXTENSION, "Bad Extension"  # RFC 3261 section 8.2.2.3
    if request.body and request.content_type not in content_types:
        return STATUS_UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type"  # RFC 3261 section 8.2.3
    if method == "INVITE" and not _accepts(request.headers.get_list("Accept"), content_types):
        return STATUS_NOT_ACCEPTABLE, "Not Acceptable"  # RFC 3261 section 21.4.7, RFC 4475 3.3.15
    return None


def _accepts(accept: list[str], content_types: Collection[str]) -> bool:
    """True if an Accept list (absent means application/sdp, RFC 3261 section 20.1) admits a type we
    can answer with."""
    if not accept:
        return True
    for item in accept:
        media = parse_media_type(item) if item else ""
        if media == "*/*" or media in content_types:
            return True
        if media.endswith("/*") and any(t.startswith(media[:-1]) for t in content_types):
            return True
    return False


def validate_response(response: SipResponse) -> str | None:
    """Why a client transport should drop a received response, or ``None`` to pass it on: other than
    exactly one Via (RFC 3261 section 18.1.2, RFC 4475 section 3.3.10), or a missing or malformed field
    that identifies the transaction (RFC 4475 section 3.1.2.5)."""
    if response.version != SIP_VERSION:
        return "Unsupported SIP version"
    try:
        vias = response.vias
        response.call_id, response.cseq, response.from_, response.to  # noqa: B018
    except SipParseError as exc:
        return exc.reason
    if len(vias) != 1:
        return f"{len(vias)} Via values in a response"
    return None


def make_response(
    request: SipRequest, status: int, reason: str | None = None, to_tag: str | None = None
) -> SipResponse:
    """A response to ``request`` with Via (all, in order), From, To, Call-ID and CSeq copied, plus
    Timestamp for a 100 (RFC 3261 sections 8.2.6.1 and 8.2.6.2).

    ``to_tag`` is added to To unless the request's To already has a tag. Field values are copied as
    received, so this also works on the ``partial`` of a :class:`MalformedMessage`. What the request had
    parsed of the copied fields is handed on, so the response does not parse them again.
    """
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} out of range")
    fields: list[tuple[str, str, str]] = []
    parsed = request.headers._parsed
    to = parsed.get("to") if parsed else None
    tagged = False
    for key, name, value in request.headers._fields:
        if key in ("via", "from", "call-id", "cseq") or (key == "timestamp" and status == STATUS_TRYING):
            fields.append((key, name, value))
        elif key == "to":
            new_value = _with_to_tag(value, to_tag, to if isinstance(to, NameAddr) else None)
            tagged = tagged or new_value != value
            fields.append((key, name, new_value))
    headers = Headers._trusted(fields)
    if parsed:
        headers._parsed = {key: parsed[key] for key in _COPIED_PARSED if key in parsed}
        if isinstance(to, NameAddr):
            # One To field (else it would not have parsed); a trailing ;tag is a field param.
            headers._parsed["to"] = to.with_params(tag=to_tag) if tagged else to
    return SipResponse(status, REASON_PHRASES.get(status, "") if reason is None else reason, headers)


# Accessors of the fields make_response copies unchanged.
_COPIED_PARSED = ("vias", "top_via", "from", "call_id", "cseq")


def _with_to_tag(value: str, tag: str | None, parsed: NameAddr | None = None) -> str:
    """``value`` with ``;tag=`` appended unless it has a tag; ``parsed`` is ``value`` already parsed."""
    if tag is None:
        return value
    if TOKEN.fullmatch(tag) is None:
        raise ValueError(f"bad tag {tag!r}")
    if parsed is None:
        try:
            parsed = NameAddr.parse(value)
        except SipParseError:
            return value
    # Appending keeps the field as the client wrote it; in either form a trailing ;tag is a field param.
    return value if parsed.tag is not None else f"{value};tag={tag}"
