"""Inbound calls (ARCHITECTURE.md, "Inbound call, step by step").

Source ACL (403), capacity (503 with Retry-After), 100 Trying, the handler's decision, a leg on the
least-loaded media worker, the SDP answer, the leg update, then the 200 OK (retransmitted until the
ACK), the call record, the events and the session entries. A CANCEL or a hangup command stops the
setup wherever it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from activecall.sip_edge import metrics
from activecall.sip_edge.call import Call, CallState, SetupFailed, uri_user
from activecall.sip_edge.handler import CallInfo, PlaybookHandler
from activecall.sip_edge.legs import LegError
from activecall.sip_edge.message import SipRequest
from activecall.sip_edge.sdp import (
    PROTO_RTP_SAVP,
    Answer,
    CryptoFactory,
    NegotiationError,
    SdpError,
    SessionDescription,
    SrtpMode,
    generate_crypto,
    negotiate_answer,
)
from activecall.sip_edge.ua import IncomingCall

if TYPE_CHECKING:
    from activecall.sip_edge.edge import Edge

log = logging.getLogger("activecall.sip_edge.inbound")

STATUS_CANCELLED = 487
T = TypeVar("T")


def invite_variables(request: SipRequest) -> dict[str, str]:
    """Every header of the INVITE by name (repeated fields joined with ", ")."""
    variables: dict[str, str] = {}
    for name, value in request.headers:
        variables[name] = f"{variables[name]}, {value}" if name in variables else value
    return variables


def wants_srtp(offer: SessionDescription, mode: SrtpMode) -> bool:
    """Whether the stream we will accept is SRTP: RTP/SAVP, or RTP/AVP with crypto when allowed."""
    for media in offer.media:
        if media.media == "audio" and media.port != 0:
            return media.proto == PROTO_RTP_SAVP or (
                mode is not SrtpMode.OFF and media.has_attribute("crypto")
            )
    return False


class Inbound:
    """Answers the INVITEs of one edge."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge

    async def run(self, incoming: IncomingCall) -> None:
        """Admit, decide, open the leg, answer (or refuse) one INVITE."""
        if not self.edge.acl.permits(incoming.flow.remote[0]):
            metrics.ACL_REJECTIONS.inc()
            metrics.child(metrics.CALLS, "inbound", "forbidden").inc()
            incoming.reject(403)
            return
        if not await self.edge.admit():
            metrics.CAPACITY_REJECTIONS.inc()
            metrics.child(metrics.CALLS, "inbound", "unavailable").inc()
            incoming.reject(503, headers=[("Retry-After", str(self.edge.options.retry_after))])
            return
        incoming.trying()
        call = self._new_call(incoming)
        self.edge.track(call)
        try:
            await call.create_record(CallState.RINGING)
            await self._answer(call, incoming)
        except SetupFailed as exc:
            incoming.reject(exc.status, exc.reason, exc.headers)
            await call.finish(exc.reason, exc.by, exc.status, exc.state)
        except Exception:
            log.exception("inbound call failed", extra={"call_id": call.call_id})
            incoming.reject(500)
            await call.finish("internal error", "edge", 500, CallState.FAILED)

    def _new_call(self, incoming: IncomingCall) -> Call:
        request = incoming.request
        caller, callee = uri_user(request.from_.uri), uri_user(request.uri)
        variables = invite_variables(request)
        variables.update(caller=caller, callee=callee)
        return Call(self.edge, self.edge.new_call_id(), "inbound", caller, callee, request.call_id, variables)

    def _call_info(self, call: Call, incoming: IncomingCall) -> CallInfo:
        request, flow = incoming.request, incoming.flow
        return CallInfo(
            call_id=call.call_id,
            caller=call.caller,
            callee=call.callee,
            from_uri=str(request.from_.uri),
            to_uri=str(request.to.uri),
            request_uri=str(request.uri),
            source=f"{flow.remote[0]}:{flow.remote[1]}",
            transport=flow.transport.value,
            sip_call_id=request.call_id,
            headers=invite_variables(request),
        )

    async def _answer(self, call: Call, incoming: IncomingCall) -> None:
        offer = self._offer(incoming.request)
        mode = SrtpMode.OPTIONAL if self.edge.config.enable_srtp else SrtpMode.OFF
        srtp = wants_srtp(offer, mode)
        if srtp:
            mode = SrtpMode.OPTIONAL  # an RTP/SAVP offer is answered with SRTP whatever the default
        # An offer nothing in it can answer is refused before the handler and the leg are bothered.
        self._negotiate(offer, self.edge.config.external_ip or "0.0.0.0", 9, mode, generate_crypto)
        handler = self.edge.handler
        decide = handler.decide(self._call_info(call, incoming))
        # Rules decide at once; only a webhook is worth racing against a CANCEL.
        decision = await (
            decide if isinstance(handler, PlaybookHandler) else self._unless_cancelled(call, incoming, decide)
        )
        if not decision.accepted:
            raise SetupFailed(decision.reject_code, decision.reject_reason or "rejected", CallState.REJECTED)
        call.playbook = decision.playbook
        call.variables.update(decision.variables)
        try:
            call.leg = leg = await self.edge.legs.open(call.call_id, call.call_id, srtp)
        except LegError as exc:
            raise SetupFailed(503, "no media capacity", headers=self._retry_after()) from exc
        self._check_cancelled(call, incoming)
        answer = self._negotiate(offer, self.edge.media_address(leg), leg.port, mode, leg.crypto)
        await self.edge.legs.update(call.call_id, leg, answer)
        self._check_cancelled(call, incoming)
        call.answer = answer
        call.session = incoming.accept(bytes(answer.sdp), call)
        await call.publish_answered()

    @staticmethod
    def _negotiate(
        offer: SessionDescription, address: str, port: int, mode: SrtpMode, crypto: CryptoFactory
    ) -> Answer:
        try:
            return negotiate_answer(offer, address, port, srtp=mode, local_crypto_factory=crypto)
        except NegotiationError as exc:
            raise SetupFailed(488, "Not Acceptable Here", headers=[("Warning", exc.warning)]) from exc

    def _retry_after(self) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.edge.options.retry_after))]

    @staticmethod
    def _offer(request: SipRequest) -> SessionDescription:
        if not request.body:
            warning = '399 edge "an SDP offer is required"'
            raise SetupFailed(488, "Not Acceptable Here", headers=[("Warning", warning)])
        try:
            return SessionDescription.parse(request.body)
        except SdpError as exc:
            raise SetupFailed(400, "Bad SDP") from exc

    @staticmethod
    def _check_cancelled(call: Call, incoming: IncomingCall) -> None:
        if incoming.cancelled.is_set():
            raise SetupFailed(STATUS_CANCELLED, "cancelled", CallState.CANCELLED, by="remote")
        if call.abort.is_set():
            raise SetupFailed(480, call.abort_reason or "hangup", CallState.CANCELLED, by=call.abort_by)

    async def _unless_cancelled(self, call: Call, incoming: IncomingCall, work: Awaitable[T]) -> T:
        """Await ``work`` unless the caller cancels or a command hangs up first."""
        task = asyncio.ensure_future(work)
        stops = [asyncio.ensure_future(incoming.cancelled.wait()), asyncio.ensure_future(call.abort.wait())]
        try:
            await asyncio.wait([task, *stops], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for stop in stops:
                stop.cancel()
        if not task.done():
            task.cancel()
            self._check_cancelled(call, incoming)
        return task.result()
