"""Where an outbound call goes and as whom: the callee's URI (a bare number goes to the first trunk),
the From address, and the credentials that answer a challenge, from ``[[sip_registrations]]``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from activecall.config import SipRegistration
from activecall.messages import Originate
from activecall.sip_edge.app.call import SetupFailed
from activecall.sip_edge.sip.syntax.digest import DigestClient
from activecall.sip_edge.sip.syntax.uri import SCHEME_SIP, SCHEME_SIPS, NameAddr, SipParseError, SipUri
from activecall.sip_edge.sip.ua.registration import registration_uri


class DialPlan:
    def __init__(
        self, registrations: Sequence[SipRegistration], contact_user: str, local_host: Callable[[], str]
    ) -> None:
        self.registrations = registrations
        self.contact_user = contact_user
        # The host of our From when the request gives no SIP URI: asked at each call, since the
        # listeners may be bound after the plan is made.
        self.local_host = local_host

    def addresses(self, message: Originate) -> tuple[SipUri, NameAddr, NameAddr]:
        """The Request-URI, From and To of the INVITE an Originate asks for."""
        callee = message.callee.strip()
        try:
            if callee.startswith((f"{SCHEME_SIP}:", f"{SCHEME_SIPS}:")):
                uri = SipUri.parse(callee)
            else:
                uri = self._via_trunk(callee.removeprefix("tel:"))
            to = NameAddr(SipUri(uri.scheme, uri.user, None, uri.host, uri.port))
            return uri, NameAddr.parse(self.caller_uri(message.caller, uri.host)), to
        except SipParseError as exc:
            raise SetupFailed(400, f"bad address: {exc.reason}") from exc

    def _via_trunk(self, number: str) -> SipUri:
        """A bare number goes to the first configured trunk (``[[sip_registrations]]``)."""
        if not self.registrations:
            raise SetupFailed(400, "the callee is not a SIP URI and no trunk is configured")
        base = registration_uri(self.registrations[0])
        return SipUri(base.scheme, number, None, base.host, base.port, dict(base.params))

    def caller_uri(self, caller: str, callee_host: str = "") -> str:
        """The From URI: the request's caller, else the trunk's ``caller`` (carriers such as Twilio
        refuse a caller ID that is not a number of the account), else our contact user."""
        caller = caller.strip().removeprefix("tel:")
        if caller.startswith((f"{SCHEME_SIP}:", f"{SCHEME_SIPS}:")):
            return caller
        if not caller:
            trunk = self._registration_for(callee_host) if callee_host else None
            caller = trunk.caller if trunk else ""
        return f"sip:{caller or self.contact_user}@{self.local_host()}"

    def credentials(self, message: Originate, uri: SipUri) -> DigestClient | None:
        if message.username:
            return DigestClient(message.username, message.password)
        registration = self._registration_for(uri.host)
        return DigestClient(registration.username, registration.password) if registration else None

    def _registration_for(self, host: str) -> SipRegistration | None:
        """The ``[[sip_registrations]]`` entry for a host: same server host, or same realm."""
        for registration in self.registrations:
            if registration_uri(registration).host.lower() == host.lower() or registration.realm == host:
                return registration
        return None
