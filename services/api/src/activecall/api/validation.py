"""Checks on what clients send: SIP and tel URIs, E.164 numbers, header names, playbook names.

Pure functions that raise :class:`InvalidInput` (a ``ValueError``) with a message fit for an API
error, so pydantic validators and route-level checks report them the same way. Anything that ends
up in a SIP message is held to the RFC grammar here, so no client can smuggle a CR/LF or a header
into an INVITE.
"""

from __future__ import annotations

import re
from pathlib import Path

TWILIO_TERMINATION_SUFFIX = ".pstn.twilio.com"
URI_SCHEMES = ("sip", "sips", "tel")
MAX_URI_LENGTH = 512

# RFC 3261 section 25.1: user = 1*( unreserved / escaped / user-unreserved ).
_SIP_USER = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
# RFC 3261 section 25.1: hostname, IPv4address or IPv6reference, then an optional port.
_HOSTNAME = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?$"
)
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_IPV6_REFERENCE = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")
# uri-parameters and headers of a SIP URI: param chars, escapes and the separators ; = ? & only.
_SIP_TAIL = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$;=?]|%[0-9A-Fa-f]{2})*$")
# RFC 3966 section 3: a global number with visual separators, or a local one with a phone-context.
_TEL_GLOBAL = re.compile(r"^\+[0-9().\-]*[0-9][0-9().\-]*$")
_TEL_LOCAL = re.compile(r"^[0-9A-Fa-f*#().\-]*[0-9A-Fa-f*#][0-9A-Fa-f*#().\-]*$")
_TEL_PARAMS = re.compile(r"^(?:;[A-Za-z0-9\-]+(?:=(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+)?)*$")
# ITU-T E.164: a plus sign and at most 15 digits; trunks reject fewer than 8.
_E164 = re.compile(r"^\+[0-9]{8,15}$")
# RFC 3261 section 25.1: token; extension headers start with X-.
_EXTENSION_HEADER = re.compile(r"^[Xx]-[A-Za-z0-9\-.!%*_+`'~]+$")
_PLAYBOOK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


class InvalidInput(ValueError):
    """A value a client sent that the gateway refuses."""


def is_e164(number: str) -> bool:
    return bool(_E164.match(number))


def check_uri(uri: str, what: str = "URI") -> str:
    """Accept a ``sip:``, ``sips:`` (RFC 3261 section 19.1) or ``tel:`` (RFC 3966) URI.

    A SIP URI whose host ends with ``.pstn.twilio.com`` must carry an E.164 number as its user
    part: Twilio's termination rejects anything else.
    """
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidInput(f"{what} is longer than {MAX_URI_LENGTH} characters")
    scheme, colon, rest = uri.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in URI_SCHEMES:
        raise InvalidInput(f"{what} must be a sip:, sips: or tel: URI")
    if scheme == "tel":
        _check_tel(rest, what)
    else:
        _check_sip(rest, what)
    return uri


def _check_tel(rest: str, what: str) -> None:
    number, semicolon, params = rest.partition(";")
    params = semicolon + params
    if not _TEL_PARAMS.match(params):
        raise InvalidInput(f"{what}: malformed tel: parameters")
    if _TEL_GLOBAL.match(number):
        return
    if _TEL_LOCAL.match(number) and ";phone-context=" in params.lower():
        return
    raise InvalidInput(f"{what}: a tel: URI needs a +number (or a local number with phone-context)")


def _check_sip(rest: str, what: str) -> None:
    user, at, hostpart = rest.partition("@")
    if not at:
        user, hostpart = "", rest
    elif not user or not _SIP_USER.match(user):
        raise InvalidInput(f"{what}: malformed user part of the SIP URI")
    split = re.search(r"[;?]", hostpart)
    hostport, tail = (hostpart[: split.start()], hostpart[split.start() :]) if split else (hostpart, "")
    host = _check_hostport(hostport, what)
    if not _SIP_TAIL.match(tail):
        raise InvalidInput(f"{what}: malformed SIP URI parameters")
    if host.lower().rstrip(".").endswith(TWILIO_TERMINATION_SUFFIX):
        number = user.partition(";")[0]
        if not is_e164(number):
            raise InvalidInput(
                f"{what}: Twilio termination needs an E.164 number (+ and 8 to 15 digits) "
                f"as the user part, got {number!r}"
            )


def _check_hostport(hostport: str, what: str) -> str:
    if hostport.startswith("["):
        host, bracket, after = hostport.partition("]")
        host += bracket
        if after and not after.startswith(":"):
            raise InvalidInput(f"{what}: malformed host in the SIP URI")
        port = after[1:]
    else:
        host, _, port = hostport.partition(":")
    valid_host = bool(_HOSTNAME.match(host) or _IPV6_REFERENCE.match(host))
    if _IPV4.match(host):
        valid_host = all(int(octet) <= 255 for octet in host.split("."))
    if not host or not valid_host:
        raise InvalidInput(f"{what}: malformed host in the SIP URI")
    if port and not (port.isdigit() and 0 < int(port) <= 65535):
        raise InvalidInput(f"{what}: malformed port in the SIP URI")
    return host


def check_header_name(name: str) -> str:
    """Only extension headers (``X-...``, an RFC 3261 section 25.1 token) may be added to an INVITE."""
    if not _EXTENSION_HEADER.match(name):
        raise InvalidInput(f"header {name!r}: only X- headers (token characters) may be set")
    return name


def check_header_value(value: str) -> str:
    """No control characters: a CR or LF would end the header and start another."""
    if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value):
        raise InvalidInput("header values must not contain control characters")
    return value


def check_no_control(value: str, what: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidInput(f"{what} must not contain control characters")
    return value


def check_playbook_name(name: str) -> str:
    """A playbook is named by its file name alone: no directory, no parent reference."""
    if not _PLAYBOOK_NAME.match(name) or ".." in name:
        raise InvalidInput("playbook must be a file name (letters, digits, '.', '_', '-'), not a path")
    return name


def find_playbook(name: str, dirs: list[str]) -> Path | None:
    """The first regular file called ``name`` in the playbook directories."""
    check_playbook_name(name)
    for directory in dirs:
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate
    return None


def check_media_path(path: str) -> str:
    """A file for the media worker to play: relative to its audio directory, never climbing out of it."""
    parts = path.replace("\\", "/").split("/")
    if not path or path.startswith(("/", "\\")) or ".." in parts or any(not p for p in parts):
        raise InvalidInput("file must be a relative path without '..' segments")
    return check_no_control(path, "file")
