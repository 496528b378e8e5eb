"""REGISTER client for ``[[sip_registrations]]`` (RFC 3261 section 10.2, digest per section 22).

Each entry binds ``sip:username@server`` to our Contact, answers 401/407 with the entry's credentials
(re-sending them with the next nonce count on refreshes), obeys 423 Min-Expires, refreshes before the
granted expiry and retries failures with exponential backoff. Stopping unregisters (Expires: 0).
Twilio Elastic SIP Trunking accepts no REGISTER; other trunks and PBXs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from activecall.config import SipRegistration
from activecall.sip_edge import metrics
from activecall.sip_edge.sip.dialog.capabilities import ALLOW
from activecall.sip_edge.sip.dialog.dialog import MAX_FORWARDS, new_tag
from activecall.sip_edge.sip.syntax.digest import (
    CHALLENGE_HEADERS,
    Challenge,
    DigestClient,
    DigestError,
    select_challenge,
)
from activecall.sip_edge.sip.syntax.message import Headers, SipRequest, SipResponse
from activecall.sip_edge.sip.syntax.uri import SCHEME_SIPS, NameAddr, SipParseError, SipUri, get_param
from activecall.sip_edge.sip.transport.transport import Transport
from activecall.sip_edge.sip.ua.ua import UserAgent

log = logging.getLogger("activecall.sip_edge.sip.ua.registration")

MIN_BACKOFF = 1.0
MAX_BACKOFF = 300.0
UNREGISTER_TIMEOUT = 2.0
STATUS_INTERVAL_TOO_BRIEF = 423
MAX_ATTEMPTS = 3
TWILIO_TERMINATION_SUFFIX = ".pstn.twilio.com"


def sends_register(config: SipRegistration) -> bool:
    """Whether an entry registers: not when ``register = false``, and never with a Twilio Elastic SIP
    Trunking termination host (``*.pstn.twilio.com``), which refuses REGISTER and challenges each INVITE
    instead, so such an entry (as the integration guide writes it) only supplies credentials."""
    if not config.register:
        return False
    return not registration_uri(config).host.lower().endswith(TWILIO_TERMINATION_SUFFIX)


def registration_uri(config: SipRegistration) -> SipUri:
    """The registrar's URI from ``server`` (``host``, ``host:port`` or a full ``sip:``/``sips:`` URI),
    with ``;transport=`` from ``transport`` unless the server names one."""
    server = config.server.strip()
    uri = SipUri.parse(server if server.startswith(("sip:", "sips:")) else f"sip:{server}")
    if config.transport != "udp" and uri.scheme != SCHEME_SIPS and get_param(uri.params, "transport") is None:
        uri = uri.with_params(transport=config.transport)
    return uri


def refresh_delay(granted: float) -> float:
    """Refresh ahead of expiry: 10% (at least 5 s) early, but never before half the interval."""
    return max(granted / 2, granted - max(5.0, granted * 0.1))


class Registration:
    """Keeps one binding alive."""

    def __init__(
        self,
        ua: UserAgent,
        config: SipRegistration,
        *,
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.ua = ua
        self.config = config
        self.uri = registration_uri(config)
        self.aor = SipUri(self.uri.scheme, config.username, None, self.uri.host)
        self.digest = DigestClient(config.username, config.password)
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.call_id = ua.new_call_id()
        self.tag = new_tag()
        self.cseq = 0
        self.granted = 0
        self.registrations = 0
        self.bound = asyncio.Event()
        self._credentials_header = ""
        self._challenge: Challenge | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"register-{self.config.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.granted:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.register(0), UNREGISTER_TIMEOUT)
        metrics.REGISTRATION_UP.labels(self.config.name).set(0)

    async def _run(self) -> None:
        backoff = self.min_backoff
        while True:
            try:
                granted = await self.register(self.config.expires)
            except Exception:
                log.exception("REGISTER failed", extra={"registration": self.config.name})
                granted = 0
            metrics.REGISTRATION_UP.labels(self.config.name).set(1 if granted else 0)
            if granted:
                backoff = self.min_backoff
                await asyncio.sleep(refresh_delay(granted))
            else:
                self.bound.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    async def register(self, expires: int) -> int:
        """One REGISTER exchange (with its challenge); returns the granted seconds, 0 on failure or
        after unregistering."""
        answered_challenge = False
        for _ in range(MAX_ATTEMPTS):
            request = self._request(expires)
            response = await self.ua.request_to(request, self.uri)
            if response.status in CHALLENGE_HEADERS:
                if answered_challenge or not self._answer(response, request):
                    break
                answered_challenge = True
                continue
            if response.status == STATUS_INTERVAL_TOO_BRIEF and expires:
                expires = max(expires, int(response.headers.get("Min-Expires") or expires))
                continue
            if 200 <= response.status < 300:
                return self._bound(response, expires)
            break
        log.warning(
            "registration refused",
            extra={"registration": self.config.name, "status": response.status, "reason": response.reason},
        )
        metrics.REGISTRATIONS.labels(self.config.name, "failed").inc()
        self.granted = 0
        return 0

    def _bound(self, response: SipResponse, asked: int) -> int:
        self.granted = self._granted(response, asked) if asked else 0
        self.registrations += 1
        metrics.REGISTRATIONS.labels(self.config.name, "registered" if asked else "unregistered").inc()
        if self.granted:
            self.bound.set()
        else:
            self.bound.clear()
        log.info("registered", extra={"registration": self.config.name, "expires": self.granted})
        return self.granted

    def _request(self, expires: int) -> SipRequest:
        self.cseq += 1
        headers = Headers()
        headers.add("Via", "SIP/2.0/UDP invalid;branch=z9hG4bK")  # replaced when sent
        headers.add("Max-Forwards", str(MAX_FORWARDS))
        headers.add("From", str(NameAddr(self.aor).with_params(tag=self.tag)))
        headers.add("To", str(NameAddr(self.aor)))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.cseq} REGISTER")
        headers.add("Contact", str(self.ua.contact(Transport.UDP, self.config.username)))
        headers.add("Expires", str(expires))
        headers.add("Allow", ALLOW)
        headers.add("User-Agent", self.ua.settings.user_agent)
        value = None
        if self._challenge is not None:
            # A new nonce: the first answer to it carries nc=00000001.
            value = self.digest.authorize(self._challenge, "REGISTER", str(self.uri))
            self._challenge = None
        elif self._credentials_header:
            # A refresh re-sends the credentials with the nonce count moved on.
            value = self.digest.reauthorize("REGISTER", str(self.uri))
        if value is not None:
            headers.add(self._credentials_header, value)
        return SipRequest("REGISTER", self.uri, headers)

    def _answer(self, response: SipResponse, request: SipRequest) -> bool:
        challenge_header, credentials_header = CHALLENGE_HEADERS[response.status]
        try:
            challenge = select_challenge(response.headers.get_all(challenge_header))
        except (DigestError, SipParseError) as exc:
            log.warning("unusable challenge", extra={"registration": self.config.name, "error": str(exc)})
            return False
        if self.config.realm and challenge.realm != self.config.realm:
            log.warning(
                "challenge for another realm",
                extra={"registration": self.config.name, "realm": challenge.realm},
            )
            return False
        self._credentials_header = credentials_header
        self._challenge = challenge
        return True

    def _granted(self, response: SipResponse, asked: int) -> int:
        """The expiry the registrar granted to our binding (RFC 3261 section 10.2.4)."""
        ours = _binding(self.ua.contact(Transport.UDP, self.config.username).uri)
        for contact in response.contacts:
            value = get_param(contact.params, "expires")
            if _binding(contact.uri) == ours and value and value.isdigit():
                return int(value)
        header = response.headers.get("Expires")
        return int(header) if header and header.strip().isdigit() else asked


def _binding(uri: object) -> tuple[str | None, str, int] | None:
    """User, host and port of a Contact, to find ours among a registrar's bindings."""
    return (uri.user, uri.host, uri.port or 5060) if isinstance(uri, SipUri) else None
