"""SIP header field names and values (RFC 3261 sections 7.3 and 20).

Names: compact forms and canonical spellings (:func:`header_key`, :func:`canonical_name`). Values: the
comma split of list-valued fields (:func:`split_header_values`) and parsers for the fields the edge acts
on: Via, CSeq, Call-ID, Content-Length, Max-Forwards, Contact, Route/Record-Route, the option-tag lists
and the auth-param lists of WWW-/Proxy-Authenticate and (Proxy-)Authorization. All of them take the value
after unfolding (RFC 3261 section 7.3.1) and raise :class:`SipParseError` on anything the grammar of
section 25.1 forbids.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from activecall.sip_edge.sip.syntax.uri import (
    MAX_PORT,
    TOKEN,
    NameAddr,
    SipParseError,
    get_param,
    is_host,
    parse_generic_params,
    parse_port,
    quote_string,
    scan_quoted,
    unquote_string,
)

__all__ = [
    "CANONICAL_NAMES",
    "COMPACT_FORMS",
    "CSeq",
    "AuthHeader",
    "SipParseError",
    "Via",
    "BRANCH_MAGIC_COOKIE",
    "CONTACT_WILDCARD",
    "canonical_name",
    "header_key",
    "is_sip_date",
    "parse_call_id",
    "parse_contact",
    "parse_content_length",
    "parse_max_forwards",
    "parse_media_type",
    "parse_name_addr_list",
    "parse_token_list",
    "parse_vias",
    "split_header_values",
]

# RFC 3261 section 8.1.1.7: branches of RFC 3261 clients start with this cookie.
BRANCH_MAGIC_COOKIE = "z9hG4bK"
# RFC 3261 section 8.1.1.5: the sequence number MUST be less than 2**31.
MAX_CSEQ = 2**31 - 1
# RFC 3261 section 20.22: Max-Forwards is an integer in 0..255.
MAX_MAX_FORWARDS = 255
MAX_TTL = 255
# More digits than any legal Content-Length; stops int() on attacker-sized numbers.
_MAX_LENGTH_DIGITS = 10
CONTACT_WILDCARD: Literal["*"] = "*"

# RFC 3261 section 7.3.3 plus the IANA SIP parameter registry: a RFC 3841, b RFC 3892, d RFC 3841,
# j RFC 3841, n/y RFC 4474, o/u RFC 6665, r RFC 3515, x RFC 4028.
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN_NAMES = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "History-Info",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Session-Expires",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
]

# Lower-case name (compact forms included) to the spelling used when printing.
CANONICAL_NAMES = {name.lower(): name for name in _KNOWN_NAMES} | COMPACT_FORMS
# Lower-case name (compact forms included) to the lookup key of the long form.
_KEYS = {letter: name.lower() for letter, name in COMPACT_FORMS.items()}

_CALL_ID = re.compile(
    r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+(?:@[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+)?"
)
_DIGITS = re.compile(r"[0-9]+")
_LIST_SPECIAL = re.compile(r'[,"<]')
_SIP_DATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)


def header_key(name: str) -> str:
    """Case-insensitive lookup key of a header field name, compact forms mapped to their long form
    (RFC 3261 sections 7.3.1 and 7.3.3)."""
    key = name.lower()
    return _KEYS.get(key, key)


def canonical_name(name: str) -> str:
    """Printable name: the long canonical spelling for known fields (``v`` and ``VIA`` give ``Via``), the
    name as written for extension fields."""
    return CANONICAL_NAMES.get(name.lower(), name)


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated field value into its elements (RFC 3261 section 7.3.1), ignoring commas
    inside quoted-strings and ``<...>``. Elements are stripped; empty ones are kept for the caller to
    judge."""
    if "," not in value:
        return [value.strip(" \t")]
    if '"' not in value and "<" not in value:
        return [item.strip(" \t") for item in value.split(",")]
    items: list[str] = []
    start = 0
    match = _LIST_SPECIAL.search(value)
    while match is not None:
        at = match.start()
        c = value[at]
        if c == ",":
            items.append(value[start:at].strip(" \t"))
            start = next_at = at + 1
        elif c == '"':
            next_at = scan_quoted(value, at)
        else:
            next_at = value.find(">", at)
            if next_at < 0:
                raise SipParseError("Missing >")
        match = _LIST_SPECIAL.search(value, next_at)
    items.append(value[start:].strip(" \t"))
    return items


def _split_lws(text: str) -> list[str]:
    return [word for word in text.replace("\t", " ").split(" ") if word]


def _number(text: str, what: str, maximum: int) -> int:
    if _DIGITS.fullmatch(text) is None:
        raise SipParseError(f"Bad {what}")
    # Leading zeros are legal ("0068"); dropping them keeps int() within its digit limit.
    digits = text.lstrip("0") or "0"
    if len(digits) > _MAX_LENGTH_DIGITS or int(digits) > maximum:
        raise SipParseError(f"{what} out of range")
    return int(digits)


def _check_token(text: str, what: str) -> str:
    if TOKEN.fullmatch(text) is None:
        raise SipParseError(f"Bad {what}")
    return text


@dataclass(slots=True, frozen=True)
class CSeq:
    """CSeq header field: sequence number and method (RFC 3261 section 20.16)."""

    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse ``1*DIGIT LWS Method``; the number must be below 2**31 (section 8.1.1.5)."""
        words = _split_lws(text)
        if len(words) != 2:
            raise SipParseError("Bad CSeq")
        return cls(_number(words[0], "CSeq", MAX_CSEQ), _check_token(words[1], "CSeq method"))

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@dataclass(slots=True, frozen=True)
class Via:
    """One Via header field value (RFC 3261 section 20.42) with the RFC 3581 ``rport`` parameter.

    ``params`` keeps parameter order; valueless ones (``;rport``) map to ``None``.
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP"
    version: str = "2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse ``sent-protocol LWS sent-by *( SEMI via-params )``, LWS allowed around ``/``, ``:``,
        ``;`` and ``=`` (section 25.1)."""
        head, semi, param_text = text.partition(";")
        protocol, _, rest = head.partition("/")
        version, slash2, rest = rest.partition("/")
        if not slash2:
            raise SipParseError("Bad Via protocol")
        rest = rest.lstrip(" \t")
        cut = _find_lws(rest)
        if cut < 0:
            raise SipParseError("Bad Via sent-by")
        transport = _check_token(rest[:cut], "Via transport")
        host, port = _parse_sent_by(rest[cut:].strip(" \t"))
        params = parse_generic_params(param_text) if semi else {}
        via = cls(
            transport,
            host,
            port,
            params,
            _check_token(protocol.strip(" \t"), "Via protocol"),
            _check_token(version.strip(" \t"), "Via version"),
        )
        via._check_params()
        return via

    def _check_params(self) -> None:
        for name, value in self.params.items():
            check = _VIA_PARAM_CHECKS.get(name.lower())
            if check is not None and not check(value):
                raise SipParseError(f"Bad Via {name}")

    def __str__(self) -> str:
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"{self.protocol}/{self.version}/{self.transport} {self.sent_by}{params}"

    @property
    def sent_by(self) -> str:
        """``host`` or ``host:port``."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def branch(self) -> str | None:
        """Transaction branch (RFC 3261 section 8.1.1.7)."""
        return get_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        """Source address stamped by the server transport (RFC 3261 section 18.2.1)."""
        return get_param(self.params, "received")

    @property
    def rport_requested(self) -> bool:
        """True when the client asked for symmetric response routing (RFC 3581 section 3)."""
        return get_param(self.params, "rport") is not None

    @property
    def rport(self) -> int | None:
        """Source port filled in by the server (RFC 3581 section 4); ``None`` if absent or valueless."""
        value = get_param(self.params, "rport")
        return int(value) if value else None

    @property
    def maddr(self) -> str | None:
        return get_param(self.params, "maddr")

    def with_received(self, host: str, port: int | None = None) -> Via:
        """Copy stamped with ``received`` and, when the client sent a valueless ``rport`` and ``port`` is
        given, its value (RFC 3261 section 18.2.1, RFC 3581 section 4)."""
        params = dict(self.params)
        params["received"] = host
        if port is not None and self.rport_requested:
            params["rport"] = str(port)
        return Via(self.transport, self.host, self.port, params, self.protocol, self.version)


def _find_lws(text: str) -> int:
    space, tab = text.find(" "), text.find("\t")
    return tab if space < 0 or 0 <= tab < space else space


def _parse_sent_by(text: str) -> tuple[str, int | None]:
    """``host [ SWS ":" SWS port ]`` (RFC 3261 section 25.1 sent-by)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError("Bad Via sent-by")
        host, after = text[: end + 1], text[end + 1 :].lstrip(" \t")
    else:
        colon = text.find(":")
        host, after = (text, "") if colon < 0 else (text[:colon].rstrip(" \t"), text[colon:])
    if not is_host(host) or (after and after[0] != ":"):
        raise SipParseError("Bad Via sent-by")
    return host, parse_port(after[1:].strip(" \t")) if after else None


def _is_ip(text: str | None) -> bool:
    if not text:
        return False
    if text[0] == "[" and text[-1] == "]":
        text = text[1:-1]
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return "%" not in text


def _is_port(text: str | None) -> bool:
    """rport is valueless in requests and a port number once filled in (RFC 3581 section 4)."""
    return not text or (_DIGITS.fullmatch(text) is not None and len(text) <= 5 and int(text) <= MAX_PORT)


def _is_ttl(text: str | None) -> bool:
    return (
        text is not None and _DIGITS.fullmatch(text) is not None and len(text) <= 3 and int(text) <= MAX_TTL
    )


# RFC 3261 section 25.1 via-params with a grammar of their own; any other is a generic-param.
_VIA_PARAM_CHECKS: dict[str, Callable[[str | None], bool]] = {
    "branch": lambda value: value is not None and TOKEN.fullmatch(value) is not None,
    "received": _is_ip,
    "rport": _is_port,
    "ttl": _is_ttl,
    "maddr": lambda value: value is not None and is_host(value),
}


def parse_vias(value: str) -> list[Via]:
    """All Via values of one header field (``Via: a, b``), in order."""
    return [Via.parse(item) for item in split_header_values(value)]


def parse_call_id(value: str) -> str:
    """Check ``callid = word [ "@" word ]`` (RFC 3261 section 25.1) and return it."""
    if _CALL_ID.fullmatch(value) is None:
        raise SipParseError("Bad Call-ID")
    return value


def parse_content_length(value: str) -> int:
    """Content-Length (RFC 3261 section 20.14): a non-negative decimal."""
    return _number(value.strip(" \t"), "Content-Length", 10**_MAX_LENGTH_DIGITS)


def parse_max_forwards(value: str) -> int:
    """Max-Forwards (RFC 3261 section 20.22): an integer in 0..255."""
    return _number(value.strip(" \t"), "Max-Forwards", MAX_MAX_FORWARDS)


def parse_contact(value: str) -> list[NameAddr] | Literal["*"]:
    """Contact values (RFC 3261 section 20.10), or ``"*"`` for the REGISTER wildcard."""
    if value.strip(" \t") == CONTACT_WILDCARD:
        return CONTACT_WILDCARD
    return [NameAddr.parse(item) for item in split_header_values(value)]


def parse_name_addr_list(value: str) -> list[NameAddr]:
    """Route, Record-Route or Path values: name-addr form only, ``<...>`` required (section 20.34)."""
    result = []
    for item in split_header_values(value):
        if "<" not in item:
            raise SipParseError("Route URI must be in <>")
        result.append(NameAddr.parse(item))
    return result


def parse_token_list(value: str) -> list[str]:
    """Option-tag or method lists such as Require, Supported, Allow (sections 20.5, 20.32, 20.37)."""
    return [_check_token(item, "option tag") for item in split_header_values(value) if item]


def parse_media_type(value: str) -> str:
    """``type/subtype`` of a Content-Type or Accept element, lower-cased, parameters dropped."""
    media = value.partition(";")[0].strip(" \t").lower()
    kind, slash, sub = media.partition("/")
    if not slash or TOKEN.fullmatch(kind.strip(" \t")) is None or TOKEN.fullmatch(sub.strip(" \t")) is None:
        raise SipParseError("Bad media type")
    return f"{kind.strip(' ')}/{sub.strip(' ')}"


def is_sip_date(value: str) -> bool:
    """True for an RFC 1123 date in GMT, the only form RFC 3261 section 20.17 allows."""
    return _SIP_DATE.fullmatch(value) is not None


# RFC 2617 section 3.2: Digest parameters that are written as quoted-strings.
DIGEST_QUOTED_PARAMS = frozenset(
    {"realm", "domain", "nonce", "opaque", "username", "uri", "response", "cnonce"}
)


@dataclass(slots=True)
class AuthHeader:
    """A challenge (WWW-Authenticate, Proxy-Authenticate) or credentials (Authorization,
    Proxy-Authorization) value: scheme and auth-params (RFC 3261 sections 20.7, 20.27, 20.28, 20.44).

    ``params`` hold decoded values; ``quoted`` names the parameters printed as quoted-strings (any value
    that is not a token is quoted regardless).
    """

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    quoted: frozenset[str] = DIGEST_QUOTED_PARAMS

    @classmethod
    def parse(cls, text: str) -> AuthHeader:
        """Parse ``auth-scheme LWS auth-param *(COMMA auth-param)`` (section 25.1)."""
        text = text.strip(" \t")
        cut = _find_lws(text)
        if cut < 0:
            raise SipParseError("Bad auth header")
        scheme = _check_token(text[:cut], "auth scheme")
        params: dict[str, str] = {}
        quoted: set[str] = set()
        for item in split_header_values(text[cut:]):
            name, eq, value = item.partition("=")
            name = _check_token(name.strip(" \t"), "auth-param")
            value = value.strip(" \t")
            if not eq or name in params:
                raise SipParseError("Bad auth-param")
            if value.startswith('"'):
                if scan_quoted(value, 0) != len(value):
                    raise SipParseError("Bad auth-param")
                params[name] = unquote_string(value)
                quoted.add(name)
            else:
                params[name] = _check_token(value, "auth-param")
        return cls(scheme, params, frozenset(quoted))

    def __str__(self) -> str:
        items = []
        for name, value in self.params.items():
            if name in self.quoted or TOKEN.fullmatch(value) is None:
                value = quote_string(value)
            items.append(f"{name}={value}")
        return f"{self.scheme} {', '.join(items)}"

    def get(self, name: str) -> str | None:
        """Parameter value by case-insensitive name."""
        return get_param(self.params, name)
