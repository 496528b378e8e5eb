"""SIP, SIPS and tel URIs and the name-addr form that carries them (RFC 3261 sections 19.1, 20.10, 25.1;
RFC 3966 for ``tel:``).

Every part keeps the text exactly as written, escapes included (``%6C`` stays ``%6C``), so a URI read off
the wire prints back the same; :func:`unescape` decodes a part when a caller needs its meaning. Only the
scheme is normalized (to lower case), because RFC 3261 section 19.1.4 makes it case-insensitive.

The parsers check the RFC 3261 section 25.1 grammar with single character-class runs, so no input can
make them backtrack.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import unquote_to_bytes

SCHEME_SIP = "sip"
SCHEME_SIPS = "sips"
SCHEME_TEL = "tel"
SIP_SCHEMES = frozenset({SCHEME_SIP, SCHEME_SIPS})

TRANSPORT_UDP = "udp"
TRANSPORT_TCP = "tcp"
TRANSPORT_TLS = "tls"
MAX_PORT = 65535

# RFC 3261 section 25.1 character sets, as regex classes.
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
# Each set admits "%"; _BAD_ESCAPE then rejects a "%" not followed by two hex digits. Two flat checks
# run faster than one (char|escape)+ group and cannot backtrack.
_USER = re.compile(rf"[{_UNRESERVED}&=+$,;?/%]+")
_PASSWORD = re.compile(rf"[{_UNRESERVED}&=+$,%]*")
_PARAMCHARS = re.compile(rf"[{_UNRESERVED}\[\]/:&+$%]+")
_HNAME = re.compile(rf"[{_UNRESERVED}\[\]/?:+$%]+")
_HVALUE = re.compile(rf"[{_UNRESERVED}\[\]/?:+$%]*")
_URIC = re.compile(rf"[{_UNRESERVED};/?:@&=+$,\[\]%]+")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# hostname = *( domainlabel "." ) toplabel [ "." ]; the toplabel's leading ALPHA is checked apart.
# '.' is outside the label class, so the label boundaries are fixed and matching stays linear.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
# Rest of a quoted-string after its opening DQUOTE: qdtext or quoted-pair units, then the closing DQUOTE.
_QUOTED_REST = re.compile(r'(?:[^"\\\r\n]|\\[^\r\n])*"')
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]+")
_DIGITS = re.compile(r"[0-9]+")
# RFC 3261 section 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# RFC 3966 section 3: phonedigit-hex and visual separators, with "+" only in front of a global number.
_TEL_NUMBER = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")
_TEL_PNAME = re.compile(r"[A-Za-z0-9\-]+")
# gen-value = token / host / quoted-string; a bare IPv6address is admitted too, as via-received has it.
_GENERIC_VALUE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+")


class SipParseError(ValueError):
    """Malformed SIP input: a URI, a header field value or a whole message (RFC 3261 section 25).

    ``reason`` is a short text fit for a 400 reason phrase. A whole message that does not parse raises
    the :class:`~activecall.sip_edge.sip.syntax.message.MalformedMessage` kind, which carries what of the
    request could be read.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _matches(charset: re.Pattern[str], text: str) -> bool:
    """``text`` is made of ``charset`` and every ``%`` starts an escape (RFC 3261 section 25.1)."""
    return charset.fullmatch(text) is not None and ("%" not in text or _BAD_ESCAPE.search(text) is None)


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes (RFC 3261 section 19.1.2) into text; invalid UTF-8 is kept as escapes."""
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def get_param(params: Mapping[str, str | None], name: str) -> str | None:
    """Value of a parameter whose name matches case-insensitively (RFC 3261 section 19.1.4); ``""`` for a
    parameter written without a value, ``None`` when absent."""
    if name in params:
        value = params[name]
        return "" if value is None else value
    lowered = name.lower()
    for key, value in params.items():
        if key.lower() == lowered:
            return "" if value is None else value
    return None


def is_host(text: str) -> bool:
    """True for an RFC 3261 section 25.1 host: hostname, IPv4address or bracketed IPv6reference."""
    if _IPV4.fullmatch(text) is not None:
        return True
    if text[:1] == "[":
        return text[-1] == "]" and is_ipv6(text[1:-1])
    if _HOSTNAME.fullmatch(text) is None:
        return False
    name = text[:-1] if text[-1] == "." else text
    return name[name.rfind(".") + 1].isalpha()


def is_ipv6(text: str) -> bool:
    """True for an IPv6address (RFC 3261 section 25.1, without brackets or zone)."""
    if _IPV6_CHARS.fullmatch(text) is None or ":" not in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def parse_port(text: str) -> int:
    """Port number of a hostport: 1*DIGIT within 0..65535."""
    if _DIGITS.fullmatch(text) is None or len(text) > 5 or int(text) > MAX_PORT:
        raise SipParseError("Bad port")
    return int(text)


def split_hostport(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (RFC 3261 section 25.1 hostport), checking both parts."""
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        if end < 0 or (rest and rest[0] != ":"):
            raise SipParseError("Bad host")
        port_text: str | None = rest[1:] if rest else None
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = None
    if not is_host(host):
        raise SipParseError("Bad host")
    return host, None if port_text is None else parse_port(port_text)


def _parse_uri_params(text: str) -> dict[str, str | None]:
    """``;name[=value]`` list of a SIP URI (RFC 3261 section 19.1.1); ``text`` starts after the first
    ``;``. Valueless parameters (``;lr``) map to ``None``."""
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not _matches(_PARAMCHARS, name) or (eq and not _matches(_PARAMCHARS, value)):
            raise SipParseError("Bad URI parameter")
        params[name] = value if eq else None
    return params


def _parse_uri_headers(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in text.split("&"):
        name, eq, value = item.partition("=")
        if not eq or not _matches(_HNAME, name) or not _matches(_HVALUE, value):
            raise SipParseError("Bad URI header")
        headers[name] = value
    return headers


def _format_params(params: Mapping[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(slots=True, frozen=True)
class SipUri:
    """A ``sip:``, ``sips:`` (RFC 3261 section 19.1) or ``tel:`` (RFC 3966) URI.

    For ``tel:`` the telephone-subscriber number is kept in ``user`` and ``host`` stays empty. ``params``
    keeps parameter order; a parameter written without a value (``;lr``) maps to ``None``. IPv6 hosts keep
    their brackets.
    """

    scheme: str = SCHEME_SIP
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a SIP/SIPS URI (RFC 3261 section 25.1 SIP-URI) or a tel URI (RFC 3966 section 3)."""
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon:
            raise SipParseError("Bad URI")
        if scheme == SCHEME_TEL:
            return cls._parse_tel(rest)
        if scheme not in SIP_SCHEMES:
            raise SipParseError("Not a SIP URI")
        user = password = None
        at = rest.find("@")
        if at >= 0:
            # '@' cannot appear unescaped in host, params or headers, so the first one ends the userinfo.
            user, colon, pw = rest[:at].partition(":")
            if not _matches(_USER, user) or (colon and not _matches(_PASSWORD, pw)):
                raise SipParseError("Bad URI userinfo")
            password = pw if colon else None
            rest = rest[at + 1 :]
        rest, qmark, header_text = rest.partition("?")
        hostport, semi, param_text = rest.partition(";")
        host, port = split_hostport(hostport)
        params = _parse_uri_params(param_text) if semi else {}
        headers = _parse_uri_headers(header_text) if qmark else {}
        return cls(scheme, user, password, host, port, params, headers)

    @classmethod
    def _parse_tel(cls, rest: str) -> SipUri:
        number, semi, param_text = rest.partition(";")
        if _TEL_NUMBER.fullmatch(number) is None or "+" in number[1:]:
            raise SipParseError("Bad tel URI")
        params: dict[str, str | None] = {}
        if semi:
            for item in param_text.split(";"):
                name, eq, value = item.partition("=")
                if _TEL_PNAME.fullmatch(name) is None or (eq and not _matches(_PARAMCHARS, value)):
                    raise SipParseError("Bad tel URI parameter")
                params[name] = value if eq else None
        return cls(SCHEME_TEL, number, None, "", None, params, {})

    def __str__(self) -> str:
        if self.scheme == SCHEME_TEL:
            return f"tel:{self.user}{_format_params(self.params)}"
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += (":", self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += (":", str(self.port))
        if self.params:
            parts.append(_format_params(self.params))
        if self.headers:
            parts += ("?", "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(parts)

    @property
    def transport(self) -> str:
        """Transport to reach this URI: the ``transport`` parameter (RFC 3261 section 19.1.1) in lower
        case, else ``tls`` for ``sips:`` (section 26.2.2, where ``transport=tcp`` also means TLS) and
        ``udp`` for ``sip:`` (RFC 3263 section 4.1 default)."""
        value = get_param(self.params, "transport")
        value = value.lower() if value else None
        if self.scheme == SCHEME_SIPS:
            return TRANSPORT_TLS if value in (None, TRANSPORT_TCP) else value
        return value or TRANSPORT_UDP

    @property
    def lr(self) -> bool:
        """True when the URI carries the loose-routing ``lr`` parameter (RFC 3261 section 19.1.1)."""
        return get_param(self.params, "lr") is not None

    @property
    def host_port(self) -> str:
        """``host`` or ``host:port`` as written in a hostport."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_params(self, params: Mapping[str, str | None] | None = None, /, **kwargs: str | None) -> SipUri:
        """Copy with parameters added or replaced (``None`` makes a valueless parameter)."""
        merged = dict(self.params)
        merged.update(params or {})
        merged.update(kwargs)
        return replace(self, params=merged, headers=dict(self.headers))


@dataclass(slots=True, frozen=True)
class OpaqueUri:
    """An absoluteURI of a scheme this layer does not interpret (RFC 3261 section 25.1), e.g. ``http:``
    in a From header field; kept as written."""

    text: str

    @classmethod
    def parse(cls, text: str) -> OpaqueUri:
        """Check ``scheme ":" 1*uric`` (RFC 2396 absoluteURI as referenced by RFC 3261 section 25.1)."""
        scheme, colon, rest = text.partition(":")
        if not colon or _SCHEME.fullmatch(scheme) is None or not _matches(_URIC, rest):
            raise SipParseError("Bad URI")
        return cls(text)

    @property
    def scheme(self) -> str:
        """Scheme in lower case; empty if the text has none."""
        scheme, colon, _ = self.text.partition(":")
        return scheme.lower() if colon else ""

    def __str__(self) -> str:
        return self.text


Uri = SipUri | OpaqueUri


def parse_uri(text: str) -> Uri:
    """Parse a Request-URI or addr-spec (RFC 3261 section 25.1): SIP, SIPS and tel URIs become
    :class:`SipUri`, any other scheme an :class:`OpaqueUri`."""
    scheme = text.partition(":")[0].lower()
    if scheme in SIP_SCHEMES or scheme == SCHEME_TEL:
        return SipUri.parse(text)
    return OpaqueUri.parse(text)


def scan_quoted(text: str, start: int) -> int:
    """Index just past the quoted-string that opens at ``text[start]`` (RFC 3261 section 25.1)."""
    match = _QUOTED_REST.match(text, start + 1)
    if match is None:
        raise SipParseError("Unterminated quoted string")
    return match.end()


def unquote_string(quoted: str) -> str:
    """Contents of a checked quoted-string with its quoted-pairs resolved."""
    inner = quoted[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    escaped = False
    for c in inner:
        if escaped or c != "\\":
            out.append(c)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def quote_string(text: str) -> str:
    """``text`` as a quoted-string, escaping ``"``, ``\\`` and control characters as quoted-pairs."""
    if "\r" in text or "\n" in text:
        raise ValueError("CR and LF cannot appear in a quoted-string")
    if not any(c in '"\\' or c < " " or c == "\x7f" for c in text):
        return f'"{text}"'
    return (
        '"'
        + "".join("\\" + c if c in '"\\' or (c < " " and c != "\t") or c == "\x7f" else c for c in text)
        + '"'
    )


def split_params(text: str) -> list[str]:
    """Split on ``;`` outside quoted-strings."""
    if '"' not in text:
        return text.split(";")
    items: list[str] = []
    start = i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i = scan_quoted(text, i)
            continue
        if c == ";":
            items.append(text[start:i])
            start = i + 1
        i += 1
    items.append(text[start:])
    return items


def parse_generic_params(text: str) -> dict[str, str | None]:
    """``*( SEMI generic-param )`` (RFC 3261 section 25.1) with LWS allowed around ``;`` and ``=``;
    ``text`` starts after the first ``;``. Quoted values keep their quotes so they print back as read."""
    params: dict[str, str | None] = {}
    for item in split_params(text):
        name, eq, value = item.partition("=")
        name = name.strip(" \t")
        if TOKEN.fullmatch(name) is None:
            raise SipParseError("Bad parameter")
        if not eq:
            params[name] = None
            continue
        value = value.strip(" \t")
        if value.startswith('"'):
            if scan_quoted(value, 0) != len(value):
                raise SipParseError("Bad parameter value")
        elif _GENERIC_VALUE.fullmatch(value) is None:
            raise SipParseError("Bad parameter value")
        params[name] = value
    return params


def _parse_display_tokens(text: str) -> str | None:
    words = [word for word in text.replace("\t", " ").split(" ") if word]
    for word in words:
        if TOKEN.fullmatch(word) is None:
            raise SipParseError("Bad display name")
    return " ".join(words) if words else None


@dataclass(slots=True, frozen=True)
class NameAddr:
    """``[display-name] <URI> *(;param)`` or the bare addr-spec form, as in From, To, Contact, Route and
    Refer-To (RFC 3261 section 20.10 and 25.1).

    ``display_name`` is the decoded text (quotes and quoted-pairs removed; unquoted token runs joined by
    single spaces), ``None`` when absent. ``params`` are the header-field parameters such as ``tag`` or
    ``expires``; quoted values keep their quotes. Printing always uses angle brackets.
    """

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse one name-addr or addr-spec. In the addr-spec form, parameters after the URI belong to
        the header field, and a URI holding ``,``, ``?`` or ``;`` is forbidden (RFC 3261 section 20)."""
        text = text.strip(" \t")
        if not text:
            raise SipParseError("Empty address")
        if text[0] == '"':
            end = scan_quoted(text, 0)
            rest = text[end:].lstrip(" \t")
            if not rest.startswith("<"):
                raise SipParseError("Bad name-addr")
            return cls._parse_bracketed(rest, unquote_string(text[:end]))
        lt = text.find("<")
        semi = text.find(";")
        if lt >= 0 and (semi < 0 or lt < semi):
            return cls._parse_bracketed(text[lt:], _parse_display_tokens(text[:lt]))
        uri_text = (text if semi < 0 else text[:semi]).rstrip(" \t")
        if "?" in uri_text or "," in uri_text:
            raise SipParseError("Unbracketed URI with ? or ,")
        params = parse_generic_params(text[semi + 1 :]) if semi >= 0 else {}
        return cls(parse_uri(uri_text), None, params)

    @classmethod
    def _parse_bracketed(cls, text: str, display_name: str | None) -> NameAddr:
        gt = text.find(">")
        if gt < 0:
            raise SipParseError("Missing >")
        uri = parse_uri(text[1:gt])
        rest = text[gt + 1 :].lstrip(" \t")
        if not rest:
            return cls(uri, display_name, {})
        if rest[0] != ";":
            raise SipParseError("Junk after >")
        return cls(uri, display_name, parse_generic_params(rest[1:]))

    def __str__(self) -> str:
        display = "" if self.display_name is None else quote_string(self.display_name) + " "
        return f"{display}<{self.uri}>{_format_params(self.params)}"

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter of a From or To header field (RFC 3261 section 19.3)."""
        return get_param(self.params, "tag")

    def with_params(
        self, params: Mapping[str, str | None] | None = None, /, **kwargs: str | None
    ) -> NameAddr:
        """Copy with header-field parameters added or replaced, e.g. ``with_params(tag="a1b2")``."""
        merged = dict(self.params)
        merged.update(params or {})
        merged.update(kwargs)
        return replace(self, params=merged)
