"""Digest authentication as SIP uses it (RFC 3261 section 22.4; RFC 2617, RFC 7616, RFC 8760).

Everything here works on header values: the caller takes the WWW-Authenticate or
Proxy-Authenticate value of a 401 or 407 and sends ours back in Authorization or
Proxy-Authorization (see :data:`CHALLENGE_HEADERS`).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

SCHEME = "Digest"

ALGORITHM_MD5 = "MD5"
ALGORITHM_MD5_SESS = "MD5-sess"
ALGORITHM_SHA256 = "SHA-256"
ALGORITHM_SHA256_SESS = "SHA-256-sess"
ALGORITHM_SHA512_256 = "SHA-512-256"
ALGORITHM_SHA512_256_SESS = "SHA-512-256-sess"
# RFC 7616 section 3.2: the algorithm named in the challenge, mapped to its hash function.
_HASH_NAMES = {
    ALGORITHM_MD5: "md5",
    ALGORITHM_SHA256: "sha256",
    ALGORITHM_SHA512_256: "sha512_256",
}
_SESS_SUFFIX = "-sess"
# RFC 8760 section 2.4: given several challenges, use the strongest algorithm we support.
ALGORITHM_PREFERENCE = (
    ALGORITHM_SHA512_256,
    ALGORITHM_SHA512_256_SESS,
    ALGORITHM_SHA256,
    ALGORITHM_SHA256_SESS,
    ALGORITHM_MD5,
    ALGORITHM_MD5_SESS,
)
_CANONICAL_ALGORITHMS = {name.casefold(): name for name in ALGORITHM_PREFERENCE}

QOP_AUTH = "auth"
QOP_AUTH_INT = "auth-int"
FIRST_NONCE_COUNT = 1

STATUS_UNAUTHORIZED = 401
STATUS_PROXY_AUTHENTICATION_REQUIRED = 407
# RFC 3261 sections 22.2 and 22.3: (challenge header, credentials header) per status code.
CHALLENGE_HEADERS = {
    STATUS_UNAUTHORIZED: ("WWW-Authenticate", "Authorization"),
    STATUS_PROXY_AUTHENTICATION_REQUIRED: ("Proxy-Authenticate", "Proxy-Authorization"),
}

# RFC 3261 section 25.1 token characters.
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_WHITESPACE = " \t\r\n"


class DigestError(Exception):
    """Base class of every digest error."""


class DigestParseError(DigestError, ValueError):
    """A challenge or credentials value is malformed."""


class UnsupportedChallengeError(DigestError, ValueError):
    """The peer asked for an algorithm or a qop we cannot compute."""


def canonical_algorithm(name: str | None) -> str:
    """The algorithm's registered spelling; an absent algorithm means MD5 (RFC 7616 section 3.3)."""
    if name is None:
        return ALGORITHM_MD5
    canonical = _CANONICAL_ALGORITHMS.get(name.casefold())
    if canonical is None:
        raise UnsupportedChallengeError(f"unsupported digest algorithm: {name}")
    return canonical


def _hash(algorithm: str, data: str | bytes) -> str:
    base = algorithm.removesuffix(_SESS_SUFFIX)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.new(_HASH_NAMES[base], raw).hexdigest()


def digest_response(
    *,
    algorithm: str | None,
    username: str,
    password: str,
    realm: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: int | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 section 3.4.1; RFC 2617 section 3.2.2 without qop)."""
    algo = canonical_algorithm(algorithm)
    ha1 = _hash(algo, f"{username}:{realm}:{password}")
    if algo.endswith(_SESS_SUFFIX):
        ha1 = _hash(algo, f"{ha1}:{nonce}:{cnonce or ''}")
    if qop == QOP_AUTH_INT:
        ha2 = _hash(algo, f"{method}:{uri}:{_hash(algo, body)}")
    else:
        ha2 = _hash(algo, f"{method}:{uri}")
    if qop is None:
        return _hash(algo, f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise DigestError("qop needs nc and cnonce")
    return _hash(algo, f"{ha1}:{nonce}:{format_nc(nc)}:{cnonce}:{qop}:{ha2}")


def format_nc(nc: int) -> str:
    """nc is eight hexadecimal digits (RFC 7616 section 3.4)."""
    return f"{nc:08x}"


def quote(value: str) -> str:
    """A quoted-string with backslash escapes (RFC 3261 section 25.1)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``scheme name=value, name="quoted", ...`` into the scheme and lower-cased params."""
    text = value.strip(_WHITESPACE)
    end = 0
    while end < len(text) and text[end] not in _WHITESPACE:
        end += 1
    scheme, pos = text[:end], end
    if not scheme or not set(scheme) <= _TOKEN_CHARS:
        raise DigestParseError(f"missing auth scheme: {value!r}")
    params: dict[str, str] = {}
    while True:
        pos = _skip(text, pos)
        if pos >= len(text):
            return scheme, params
        name, pos = _token(text, pos)
        pos = _expect(text, _skip(text, pos), "=")
        param, pos = _param_value(text, _skip(text, pos))
        if name.casefold() in params:
            raise DigestParseError(f"duplicate parameter: {name}")
        params[name.casefold()] = param
        pos = _skip(text, pos)
        if pos < len(text):
            pos = _expect(text, pos, ",")


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _expect(text: str, pos: int, char: str) -> int:
    if pos >= len(text) or text[pos] != char:
        raise DigestParseError(f"expected {char!r} at offset {pos} in {text!r}")
    return pos + 1


def _token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] in _TOKEN_CHARS:
        pos += 1
    if pos == start:
        raise DigestParseError(f"expected a parameter name at offset {pos} in {text!r}")
    return text[start:pos], pos


def _param_value(text: str, pos: int) -> tuple[str, int]:
    if pos < len(text) and text[pos] == '"':
        return _quoted(text, pos + 1)
    start = pos
    # Unquoted values are tokens; nonces seen unquoted also carry base64 '/' and '='.
    while pos < len(text) and text[pos] not in _WHITESPACE and text[pos] != ",":
        pos += 1
    if pos == start:
        raise DigestParseError(f"empty parameter value at offset {pos} in {text!r}")
    return text[start:pos], pos


def _quoted(text: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            pos += 1
            if pos >= len(text):
                break
            char = text[pos]
        out.append(char)
        pos += 1
    raise DigestParseError(f"unterminated quoted string in {text!r}")


def _digest_params(value: str) -> dict[str, str]:
    scheme, params = parse_auth_params(value)
    if scheme.casefold() != SCHEME.casefold():
        raise DigestParseError(f"not a Digest value: {scheme}")
    return params


def _required(params: dict[str, str], name: str) -> str:
    if name not in params:
        raise DigestParseError(f"missing {name} parameter")
    return params[name]


@dataclass
class Challenge:
    """A WWW-Authenticate or Proxy-Authenticate value (RFC 7616 section 3.3).

    ``algorithm`` is kept as sent; None means MD5. ``extra`` keeps parameters we do not use.
    """

    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str | None = None
    qop: tuple[str, ...] = ()
    stale: bool = False
    domain: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: str) -> Challenge:
        params = _digest_params(data)
        realm, nonce = _required(params, "realm"), _required(params, "nonce")
        qop = tuple(q.strip() for q in params.get("qop", "").split(",") if q.strip())
        known = ("realm", "nonce", "opaque", "algorithm", "qop", "stale", "domain")
        return cls(
            realm=realm,
            nonce=nonce,
            opaque=params.get("opaque"),
            algorithm=params.get("algorithm"),
            qop=qop,
            stale=params.get("stale", "false").casefold() == "true",
            domain=params.get("domain"),
            extra={name: value for name, value in params.items() if name not in known},
        )

    @property
    def hash_algorithm(self) -> str:
        """The algorithm to compute with, in its registered spelling."""
        return canonical_algorithm(self.algorithm)

    def __str__(self) -> str:
        parts = [f"realm={quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={quote(self.domain)}")
        if self.qop:
            parts.append(f"qop={quote(','.join(self.qop))}")
        parts.append(f"nonce={quote(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        if self.stale:
            parts.append("stale=TRUE")
        if self.algorithm is not None:
            parts.append(f"algorithm={self.algorithm}")
        parts += [f"{name}={quote(value)}" for name, value in self.extra.items()]
        return f"{SCHEME} " + ", ".join(parts)


@dataclass
class Credentials:
    """An Authorization or Proxy-Authorization value (RFC 7616 section 3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    qop: str | None = None
    nc: int | None = None
    cnonce: str | None = None
    opaque: str | None = None

    @classmethod
    def parse(cls, data: str) -> Credentials:
        params = _digest_params(data)
        nc = params.get("nc")
        if nc is not None and (len(nc) != 8 or not all(c in "0123456789abcdefABCDEF" for c in nc)):
            raise DigestParseError(f"nc must be eight hex digits: {nc!r}")
        return cls(
            username=_required(params, "username"),
            realm=_required(params, "realm"),
            nonce=_required(params, "nonce"),
            uri=_required(params, "uri"),
            response=_required(params, "response"),
            algorithm=params.get("algorithm"),
            qop=params.get("qop"),
            nc=None if nc is None else int(nc, 16),
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
        )

    def __str__(self) -> str:
        # Quoting follows RFC 7616 section 3.4: algorithm, qop and nc are bare tokens.
        parts = [
            f"username={quote(self.username)}",
            f"realm={quote(self.realm)}",
            f"nonce={quote(self.nonce)}",
            f"uri={quote(self.uri)}",
        ]
        if self.algorithm is not None:
            parts.append(f"algorithm={self.algorithm}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={format_nc(self.nc)}")
        if self.cnonce is not None:
            parts.append(f"cnonce={quote(self.cnonce)}")
        parts.append(f"response={quote(self.response)}")
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        return f"{SCHEME} " + ", ".join(parts)


def select_challenge(values: Iterable[str]) -> Challenge:
    """Of several challenge values, the one with the strongest algorithm we support (RFC 8760 2.4)."""
    usable = []
    for value in values:
        challenge = Challenge.parse(value)
        try:
            rank = ALGORITHM_PREFERENCE.index(challenge.hash_algorithm)
        except UnsupportedChallengeError:
            continue
        usable.append((rank, challenge))
    if not usable:
        raise UnsupportedChallengeError("no challenge with a supported algorithm")
    return min(usable, key=lambda item: item[0])[1]


def _choose_qop(offered: tuple[str, ...]) -> str | None:
    if not offered:
        return None  # RFC 2069 compatibility: no qop, no nc, no cnonce
    for qop in (QOP_AUTH, QOP_AUTH_INT):
        if qop in offered:
            return qop
    raise UnsupportedChallengeError(f"unsupported qop: {','.join(offered)}")


@dataclass
class _NonceUse:
    challenge: Challenge
    nc: int
    sess_cnonce: str | None = None


class DigestClient:
    """Answers challenges for one account, counting nc per nonce (RFC 7616 section 3.4).

    A new nonce for a realm restarts nc at 00000001; reusing the nonce increments it.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        cnonce_factory: Callable[[], str] | None = None,
    ) -> None:
        self.username = username
        self._password = password
        self._cnonce_factory = cnonce_factory or (lambda: secrets.token_hex(16))
        self._uses: dict[str, _NonceUse] = {}

    def authorize(self, challenge: Challenge | str, method: str, uri: str, body: bytes = b"") -> str:
        """The credentials value answering ``challenge`` for a request (RFC 3261 section 22.2).

        ``uri`` is the Request-URI; ``body`` matters only for qop=auth-int.
        """
        if isinstance(challenge, str):
            challenge = Challenge.parse(challenge)
        canonical_algorithm(challenge.algorithm)  # refuse before counting a nonce we cannot use
        use = self._uses.get(challenge.realm)
        if use is not None and use.challenge.nonce == challenge.nonce:
            use.nc += 1
            use.challenge = challenge
        else:
            use = _NonceUse(challenge, FIRST_NONCE_COUNT)
            self._uses[challenge.realm] = use
        return str(self._credentials(use, method, uri, body))

    def reauthorize(self, method: str, uri: str, body: bytes = b"", realm: str | None = None) -> str | None:
        """Credentials for a new request with the last nonce of ``realm`` (or the only realm), if any.

        Lets a REGISTER refresh or an in-dialog request skip a round trip; the server may still
        answer 401/407 with stale=TRUE.
        """
        if realm is None:
            if len(self._uses) != 1:
                return None
            realm = next(iter(self._uses))
        use = self._uses.get(realm)
        return None if use is None else self.authorize(use.challenge, method, uri, body)

    def nonce_count(self, realm: str) -> int:
        """The nc last sent for ``realm``; 0 before any."""
        use = self._uses.get(realm)
        return 0 if use is None else use.nc

    def _cnonce(self, use: _NonceUse) -> str:
        if not use.challenge.hash_algorithm.endswith(_SESS_SUFFIX):
            return self._cnonce_factory()
        # RFC 2617 section 3.2.2.2: -sess binds HA1 to the first cnonce, so it stays with the nonce.
        if use.sess_cnonce is None:
            use.sess_cnonce = self._cnonce_factory()
        return use.sess_cnonce

    def _credentials(self, use: _NonceUse, method: str, uri: str, body: bytes) -> Credentials:
        challenge = use.challenge
        qop = _choose_qop(challenge.qop)
        cnonce = None if qop is None else self._cnonce(use)
        nc = None if qop is None else use.nc
        response = digest_response(
            algorithm=challenge.algorithm,
            username=self.username,
            password=self._password,
            realm=challenge.realm,
            nonce=challenge.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        return Credentials(
            username=self.username,
            realm=challenge.realm,
            nonce=challenge.nonce,
            uri=uri,
            response=response,
            algorithm=challenge.algorithm,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            opaque=challenge.opaque,
        )


# --- Server side -------------------------------------------------------------------------------


class NonceState(enum.Enum):
    VALID = "valid"
    STALE = "stale"
    INVALID = "invalid"


class NonceSource:
    """Nonces that prove their own age: issue time plus an HMAC, so checking needs no memory.

    RFC 7616 section 5.4 suggests a time stamp and a private key in the nonce. Replay of an
    unexpired nonce is not detected (that would need per-nonce nc state).
    """

    _MAC_LENGTH = 16

    def __init__(
        self,
        secret: bytes | None = None,
        lifetime: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._lifetime = lifetime
        self._clock = clock

    def issue(self) -> str:
        stamp = struct.pack("!Q", int(self._clock()))
        return base64.urlsafe_b64encode(stamp + self._mac(stamp)).decode("ascii")

    def check(self, nonce: str) -> NonceState:
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return NonceState.INVALID
        stamp, mac = raw[:8], raw[8:]
        if len(stamp) != 8 or not hmac.compare_digest(mac, self._mac(stamp)):
            return NonceState.INVALID
        age = self._clock() - struct.unpack("!Q", stamp)[0]
        return NonceState.VALID if 0 <= age <= self._lifetime else NonceState.STALE

    def _mac(self, stamp: bytes) -> bytes:
        return hmac.new(self._secret, stamp, hashlib.sha256).digest()[: self._MAC_LENGTH]


def make_challenge(
    realm: str,
    *,
    nonce: str | None = None,
    algorithm: str | None = ALGORITHM_MD5,
    qop: tuple[str, ...] = (QOP_AUTH,),
    opaque: str | None = None,
    stale: bool = False,
    domain: str | None = None,
) -> Challenge:
    """A challenge for a 401/407 (RFC 3261 section 22.1); pass ``nonce`` from a :class:`NonceSource`."""
    if algorithm is not None:
        canonical_algorithm(algorithm)
    return Challenge(
        realm=realm,
        nonce=nonce if nonce is not None else secrets.token_hex(16),
        opaque=opaque,
        algorithm=algorithm,
        qop=qop,
        stale=stale,
        domain=domain,
    )


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify_authorization`; ``stale`` asks for a challenge with stale=TRUE."""

    ok: bool
    username: str | None = None
    stale: bool = False
    reason: str = ""


def verify_authorization(
    value: str,
    method: str,
    password_lookup: Callable[[str, str], str | None],
    *,
    body: bytes = b"",
    realm: str | None = None,
    uri: str | None = None,
    nonce_check: Callable[[str], NonceState] | None = None,
) -> Verification:
    """Check an Authorization / Proxy-Authorization value (RFC 7616 section 3.4.1).

    ``password_lookup(username, realm)`` returns the password or None. Give ``realm`` and ``uri``
    (the Request-URI, RFC 2617 section 3.2.2.5) to pin them, and ``nonce_check`` (for example
    :meth:`NonceSource.check`) to refuse nonces we did not issue; without it any nonce passes.
    A correct digest on an expired nonce yields ``stale=True`` (RFC 7616 section 3.3).
    """
    try:
        creds = Credentials.parse(value)
        algorithm = canonical_algorithm(creds.algorithm)
    except DigestError as exc:
        return Verification(False, reason=str(exc))
    problem = _credentials_problem(creds, realm, uri)
    if problem:
        return Verification(False, creds.username, reason=problem)
    password = password_lookup(creds.username, creds.realm)
    if password is None:
        return Verification(False, creds.username, reason="unknown user")
    expected = digest_response(
        algorithm=algorithm,
        username=creds.username,
        password=password,
        realm=creds.realm,
        nonce=creds.nonce,
        method=method,
        uri=creds.uri,
        qop=creds.qop,
        nc=creds.nc,
        cnonce=creds.cnonce,
        body=body,
    )
    if not hmac.compare_digest(
        expected.encode("ascii"), creds.response.casefold().encode("ascii", "replace")
    ):
        return Verification(False, creds.username, reason="wrong response")
    state = NonceState.VALID if nonce_check is None else nonce_check(creds.nonce)
    if state is NonceState.INVALID:
        return Verification(False, creds.username, reason="unknown nonce")
    if state is NonceState.STALE:
        return Verification(False, creds.username, stale=True, reason="stale nonce")
    return Verification(True, creds.username)


def _credentials_problem(creds: Credentials, realm: str | None, uri: str | None) -> str:
    if realm is not None and creds.realm != realm:
        return f"wrong realm {creds.realm!r}"
    if uri is not None and creds.uri != uri:
        return "digest uri does not match the Request-URI"
    if creds.qop is None:
        return ""
    if creds.qop not in (QOP_AUTH, QOP_AUTH_INT):
        return f"unsupported qop {creds.qop!r}"
    if creds.nc is None or creds.cnonce is None:
        return "qop needs nc and cnonce"
    return ""
