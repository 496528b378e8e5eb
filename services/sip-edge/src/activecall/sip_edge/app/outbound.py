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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from activecall.bus import BusTimeout
from activecall.config import Config
from activecall.contract import CallState, Direction, EndReason
from activecall.messages import Originate
from activecall.sip_edge import metrics
from activecall.sip_edge.app.call import Call, SetupFailed, Spawn, uri_user
from activecall.sip_edge.app.calls import Calls
from activecall.sip_edge.app.dialplan import DialPlan
from activecall.sip_edge.app.legs import LegClient, LegError, media_address
from activecall.sip_edge.sip.syntax.message import SipResponse
from activecall.sip_edge.sip.syntax.sdp import SdpError, SessionDescription, build_offer, process_answer
from activecall.sip_edge.sip.syntax.uri import NameAddr, SipUri
from activecall.sip_edge.sip.transport.transport import Transport
from activecall.sip_edge.sip.ua.ua import OutgoingCall, UserAgent

log = logging.getLogger("activecall.sip_edge.app.outbound")

STATUS_CANCELLED = 487


@dataclass(frozen=True)
class OutboundContext:
    """What placing calls needs of the edge."""

    config: Config
    calls: Calls
    legs: LegClient
    ua: UserAgent
    # Whether the edge takes one more call now (not draining, below its limit, media capacity left).
    admit: Callable[[], Awaitable[str | None]]  # None, or why the call is refused
    spawn: Spawn


class Outbound:
    """Places the calls one edge takes from ``edge:originate``."""

    def __init__(self, context: OutboundContext) -> None:
        self.context = context
        config, ua = context.config, context.ua
        self.plan = DialPlan(
            config.sip_registrations,
            ua.settings.contact_user,
            lambda: config.external_ip or ua.transport.sent_by(Transport.UDP)[0],
        )

    async def run(self, message: Originate) -> Call:
        """Place the call an Originate asks for; returns it once answered or ended."""
        calls = self.context.calls
        try:
            uri, from_, to = self.plan.addresses(message)
        except SetupFailed as exc:
            variables = dict(message.variables)
            call = calls.open(
                Direction.OUTBOUND, message.caller, message.callee, variables, call_id=message.call_id
            )
            await self._adopt(call, message)
            await call.create_record(CallState.DIALING)
            await call.finish(exc.reason, "edge", exc.status, exc.state)
            return call
        variables = {**message.variables, "caller": uri_user(from_.uri), "callee": uri_user(uri)}
        call = calls.open(
            Direction.OUTBOUND, uri_user(from_.uri), uri_user(uri), variables, call_id=message.call_id
        )
        call.playbook = message.playbook
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
        context = self.context
        refusal = await context.admit()
        if refusal is not None:
            metrics.child(metrics.CAPACITY_REJECTIONS, "outbound", refusal).inc()
            raise SetupFailed(503, "no capacity")
        srtp = message.enable_srtp if message.enable_srtp is not None else context.config.enable_srtp
        try:
            call.leg = leg = await context.legs.open(call.call_id, call.call_id, srtp)
        except (LegError, BusTimeout) as exc:
            metrics.child(metrics.CAPACITY_REJECTIONS, "outbound", "media").inc()
            raise SetupFailed(503, EndReason.NO_MEDIA_CAPACITY) from exc
        offer = build_offer(
            media_address(leg, context.config.external_ip),
            leg.port,
            srtp=srtp,
            crypto=[leg.crypto(1)] if srtp else None,
        )
        call.offer = offer
        try:
            outgoing = OutgoingCall(
                context.ua,
                uri,
                from_,
                to,
                call,
                body=bytes(offer),
                headers=list(message.headers.items()),
                credentials=self.plan.credentials(message, uri),
                on_progress=self._progress_callback(call),
            )
        except ValueError as exc:
            raise SetupFailed(400, f"bad header: {exc}") from exc
        call.outgoing = outgoing
        await call.record_sip_call_id(outgoing.call_id)
        if call.abort.is_set():
            raise SetupFailed(
                STATUS_CANCELLED, call.abort_reason or EndReason.HANGUP, CallState.CANCELLED, by=call.abort_by
            )
        ring_timer = asyncio.get_running_loop().call_later(
            message.ring_timeout, call.hangup, EndReason.NO_ANSWER, "timeout"
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
            await session.bye(EndReason.MEDIA_NEGOTIATION_FAILED)
            raise SetupFailed(488, EndReason.MEDIA_NEGOTIATION_FAILED) from exc
        assert call.leg is not None
        await self.context.legs.update(call.call_id, call.leg, answer)
        call.answer = answer
        await call.publish_answered()

    @staticmethod
    def _failure(call: Call, response: SipResponse) -> SetupFailed:
        status = response.status
        if call.abort.is_set():
            state = CallState.FAILED if call.abort_by == "timeout" else CallState.CANCELLED
            return SetupFailed(status, call.abort_reason or EndReason.HANGUP, state, by=call.abort_by)
        if status in (486, 600):
            return SetupFailed(status, EndReason.BUSY, by="remote")
        return SetupFailed(status, f"{status} {response.reason}".strip(), by="remote")

    def _progress_callback(self, call: Call) -> Callable[[SipResponse], None]:
        def progress(response: SipResponse) -> None:
            self.context.spawn(self._progress(call, response), f"progress-{call.call_id}")

        return progress

    async def _progress(self, call: Call, response: SipResponse) -> None:
        """180/183: ringing, and early media when the provisional carries the answer."""
        if response.body and call.offer is not None and call.leg is not None and call.session is None:
            try:
                answer = process_answer(call.offer, SessionDescription.parse(response.body))
                await self.context.legs.update(call.call_id, call.leg, answer)
                call.answer = answer
                await call.set_state(CallState.EARLY)
                return
            except (SdpError, LegError) as exc:
                log.info("unusable early media answer", extra={"call_id": call.call_id, "error": str(exc)})
        if call.state is CallState.DIALING:
            await call.set_state(CallState.RINGING)
