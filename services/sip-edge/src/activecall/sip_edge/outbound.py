"""Outbound calls from ``Originate`` requests.

The leg is opened first so the offer carries the worker's port and key (SRTP per call:
``Originate.enable_srtp``, else ``enable_srtp``, else plain RTP). The INVITE answers a 401/407 with
the request's credentials or those of the matching ``[[sip_registrations]]`` entry; 180 marks the
call ringing and a 183 with SDP starts early media; the ring timeout or a hangup command sends CANCEL.
A bare number is sent to the first configured trunk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from activecall.bus import BusTimeout
from activecall.config import SipRegistration
from activecall.messages import Originate
from activecall.sip_edge.call import Call, CallState, SetupFailed, uri_user
from activecall.sip_edge.digest import DigestClient
from activecall.sip_edge.legs import LegError
from activecall.sip_edge.message import SipResponse
from activecall.sip_edge.registration import registration_uri
from activecall.sip_edge.sdp import SdpError, SessionDescription, build_offer, process_answer
from activecall.sip_edge.transport import Transport
from activecall.sip_edge.ua import OutgoingCall
from activecall.sip_edge.uri import SCHEME_SIP, SCHEME_SIPS, NameAddr, SipParseError, SipUri

if TYPE_CHECKING:
    from activecall.sip_edge.edge import Edge

log = logging.getLogger("activecall.sip_edge.outbound")

STATUS_CANCELLED = 487


class Outbound:
    """Places the calls one edge takes from ``edge:originate``."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge

    async def run(self, message: Originate) -> Call:
        """Place the call an Originate asks for; returns it once answered or ended."""
        call_id = message.call_id or self.edge.new_call_id()
        try:
            uri, from_, to = self._addresses(message)
        except SetupFailed as exc:
            variables = dict(message.variables)
            call = Call(self.edge, call_id, "outbound", message.caller, message.callee, "", variables)
            self.edge.track(call)
            await self._adopt(call, message)
            await call.create_record(CallState.DIALING)
            await call.finish(exc.reason, "edge", exc.status, exc.state)
            return call
        variables = {**message.variables, "caller": uri_user(from_.uri), "callee": uri_user(uri)}
        call = Call(self.edge, call_id, "outbound", uri_user(from_.uri), uri_user(uri), "", variables)
        call.playbook = message.playbook
        self.edge.track(call)
        try:
            await self._adopt(call, message)
            await call.create_record(CallState.DIALING)
            await self._dial(call, message, uri, from_, to)
        except SetupFailed as exc:
            await call.finish(exc.reason, exc.by, exc.status, exc.state)
        except Exception:
            log.exception("outbound call failed", extra={"call_id": call.call_id})
            await call.finish("internal error", "edge", 500, CallState.FAILED)
        return call

    @staticmethod
    async def _adopt(call: Call, message: Originate) -> None:
        """A call the api queued (it names the call) goes on from the api's ``queued`` record."""
        if message.call_id:
            await call.adopt_queued_record()

    async def _dial(self, call: Call, message: Originate, uri: SipUri, from_: NameAddr, to: NameAddr) -> None:
        if not await self.edge.admit():
            raise SetupFailed(503, "no capacity")
        srtp = message.enable_srtp if message.enable_srtp is not None else self.edge.config.enable_srtp
        try:
            call.leg = leg = await self.edge.legs.open(call.call_id, call.call_id, srtp)
        except (LegError, BusTimeout) as exc:
            raise SetupFailed(503, "no media capacity") from exc
        offer = build_offer(
            self.edge.media_address(leg), leg.port, srtp=srtp, crypto=[leg.crypto(1)] if srtp else None
        )
        call.offer = offer
        try:
            outgoing = OutgoingCall(
                self.edge.ua,
                uri,
                from_,
                to,
                call,
                body=bytes(offer),
                headers=list(message.headers.items()),
                credentials=self._credentials(message, uri),
                on_progress=self._progress_callback(call),
            )
        except ValueError as exc:
            raise SetupFailed(400, f"bad header: {exc}") from exc
        call.outgoing = outgoing
        call.sip_call_id = outgoing.call_id
        await self.edge.store.update(call.call_id, sip_call_id=outgoing.call_id)
        if call.abort.is_set():
            raise SetupFailed(
                STATUS_CANCELLED, call.abort_reason or "hangup", CallState.CANCELLED, by=call.abort_by
            )
        ring_timer = asyncio.get_running_loop().call_later(
            message.ring_timeout, call.hangup, "no answer", "timeout"
        )
        try:
            response = await outgoing.run()
        finally:
            ring_timer.cancel()
        await self._connected(call, outgoing, offer, response)

    async def _connected(
        self, call: Call, outgoing: OutgoingCall, offer: SessionDescription, response: SipResponse
    ) -> None:
        session = outgoing.session
        if not 200 <= response.status < 300 or session is None or session.terminated.is_set():
            raise self._failure(call, response)
        call.session = session
        try:
            answer = process_answer(offer, SessionDescription.parse(response.body))
        except SdpError as exc:
            await session.bye("media negotiation failed")
            raise SetupFailed(488, "media negotiation failed") from exc
        assert call.leg is not None
        await self.edge.legs.update(call.call_id, call.leg, answer)
        call.answer = answer
        await call.publish_answered()

    @staticmethod
    def _failure(call: Call, response: SipResponse) -> SetupFailed:
        status = response.status
        if call.abort.is_set():
            state = CallState.FAILED if call.abort_by == "timeout" else CallState.CANCELLED
            return SetupFailed(status, call.abort_reason or "hangup", state, by=call.abort_by)
        if status in (486, 600):
            return SetupFailed(status, "busy", by="remote")
        return SetupFailed(status, f"{status} {response.reason}".strip(), by="remote")

    def _progress_callback(self, call: Call) -> Callable[[SipResponse], None]:
        def progress(response: SipResponse) -> None:
            self.edge.spawn(self._progress(call, response), f"progress-{call.call_id}")

        return progress

    async def _progress(self, call: Call, response: SipResponse) -> None:
        """180/183: ringing, and early media when the provisional carries the answer."""
        if response.body and call.offer is not None and call.leg is not None and call.session is None:
            try:
                answer = process_answer(call.offer, SessionDescription.parse(response.body))
                await self.edge.legs.update(call.call_id, call.leg, answer)
                call.answer = answer
                await call.set_state(CallState.EARLY)
                return
            except (SdpError, LegError) as exc:
                log.info("unusable early media answer", extra={"call_id": call.call_id, "error": str(exc)})
        if call.state is CallState.DIALING:
            await call.set_state(CallState.RINGING)

    def _addresses(self, message: Originate) -> tuple[SipUri, NameAddr, NameAddr]:
        callee = message.callee.strip()
        try:
            if callee.startswith((f"{SCHEME_SIP}:", f"{SCHEME_SIPS}:")):
                uri = SipUri.parse(callee)
            else:
                uri = self._via_trunk(callee.removeprefix("tel:"))
            to = NameAddr(SipUri(uri.scheme, uri.user, None, uri.host, uri.port))
            return uri, NameAddr.parse(self._caller_uri(message.caller, uri.host)), to
        except SipParseError as exc:
            raise SetupFailed(400, f"bad address: {exc.reason}") from exc

    def _via_trunk(self, number: str) -> SipUri:
        """A bare number goes to the first configured trunk (``[[sip_registrations]]``)."""
        if not self.edge.config.sip_registrations:
            raise SetupFailed(400, "the callee is not a SIP URI and no trunk is configured")
        base = registration_uri(self.edge.config.sip_registrations[0])
        return SipUri(base.scheme, number, None, base.host, base.port, dict(base.params))

    def _caller_uri(self, caller: str, callee_host: str = "") -> str:
        """The From URI: the request's caller, else the trunk's ``caller`` (carriers such as Twilio
        refuse a caller ID that is not a number of the account), else our contact user."""
        caller = caller.strip().removeprefix("tel:")
        if caller.startswith((f"{SCHEME_SIP}:", f"{SCHEME_SIPS}:")):
            return caller
        if not caller:
            trunk = self._registration_for(callee_host) if callee_host else None
            caller = trunk.caller if trunk else ""
        host = self.edge.config.external_ip or self.edge.ua.transport.sent_by(Transport.UDP)[0]
        return f"sip:{caller or self.edge.ua.settings.contact_user}@{host}"

    def _credentials(self, message: Originate, uri: SipUri) -> DigestClient | None:
        if message.username:
            return DigestClient(message.username, message.password)
        registration = self._registration_for(uri.host)
        return DigestClient(registration.username, registration.password) if registration else None

    def _registration_for(self, host: str) -> SipRegistration | None:
        """The ``[[sip_registrations]]`` entry for a host: same server host, or same realm."""
        for registration in self.edge.config.sip_registrations:
            if registration_uri(registration).host.lower() == host.lower() or registration.realm == host:
                return registration
        return None
