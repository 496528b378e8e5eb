"""Inbound calls (ARCHITECTURE.md, "Inbound call, step by step").

Source ACL (403), capacity (503 with Retry-After), 100 Trying, the handler's decision, a leg on the
least-loaded media worker, the SDP answer, the leg update, then the 200 OK (retransmitted until the
ACK), the call record, the events and the session entries. A CANCEL or a hangup command stops the
setup wherever it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from activecall.config import Config
from activecall.contract import CallState, Direction, EndReason
from activecall.sip_edge import metrics
from activecall.sip_edge.app.admission import Acl
from activecall.sip_edge.app.call import Call, SetupFailed, uri_user
from activecall.sip_edge.app.calls import Calls
from activecall.sip_edge.app.handler import CallHandler, CallInfo, PlaybookHandler
from activecall.sip_edge.app.legs import LegClient, LegError, media_address
from activecall.sip_edge.sip.syntax.message import SipRequest
from activecall.sip_edge.sip.syntax.sdp import (
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
from activecall.sip_edge.sip.ua.ua import IncomingCall

log = logging.getLogger("activecall.sip_edge.app.inbound")

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


@dataclass(frozen=True)
class InboundContext:
    """What answering INVITEs needs of the edge."""

    config: Config
    calls: Calls
    legs: LegClient
    acl: Acl
    handler: CallHandler
    # Whether the edge takes one more call now (not draining, below its limit, media capacity left).
    admit: Callable[[], Awaitable[str | None]]  # None, or why the call is refused
    retry_after: int


class Inbound:
    """Answers the INVITEs of one edge."""

    def __init__(self, context: InboundContext) -> None:
        self.context = context

    async def run(self, incoming: IncomingCall) -> None:
        """Admit, decide, open the leg, answer (or refuse) one INVITE."""
        if not self.context.acl.permits(incoming.flow.remote[0]):
            metrics.ACL_REJECTIONS.inc()
            metrics.child(metrics.CALLS, "inbound", "forbidden").inc()
            incoming.reject(403)
            return
        refusal = await self.context.admit()
        if refusal is not None:
            log.warning(
                "call refused: no room",
                extra={
                    "reason": refusal,
                    "from": incoming.flow.remote[0],
                    "sip_call_id": incoming.request.call_id,
                },
            )
            metrics.child(metrics.CAPACITY_REJECTIONS, "inbound", refusal).inc()
            metrics.child(metrics.CALLS, "inbound", "unavailable").inc()
            incoming.reject(503, headers=self._retry_after())
            return
        incoming.trying()
        call = self._new_call(incoming)
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
        return self.context.calls.open(
            Direction.INBOUND, caller, callee, variables, sip_call_id=request.call_id
        )

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
        config = self.context.config
        mode = SrtpMode.OPTIONAL if config.enable_srtp else SrtpMode.OFF
        srtp = wants_srtp(offer, mode)
        if srtp:
            mode = SrtpMode.OPTIONAL  # an RTP/SAVP offer is answered with SRTP whatever the default
        # An offer nothing in it can answer is refused before the handler and the leg are bothered.
        self._negotiate(offer, config.external_ip or "0.0.0.0", 9, mode, generate_crypto)
        handler = self.context.handler
        decide = handler.decide(self._call_info(call, incoming))
        # Rules decide at once; only a webhook is worth racing against a CANCEL.
        decision = await (
            decide if isinstance(handler, PlaybookHandler) else self._unless_cancelled(call, incoming, decide)
        )
        if not decision.accepted:
            raise SetupFailed(
                decision.reject_code, decision.reject_reason or EndReason.REJECTED, CallState.REJECTED
            )
        call.playbook = decision.playbook
        call.variables.update(decision.variables)
        try:
            call.leg = leg = await self.context.legs.open(call.call_id, call.call_id, srtp)
        except LegError as exc:
            metrics.child(metrics.CAPACITY_REJECTIONS, "inbound", "media").inc()
            raise SetupFailed(503, EndReason.NO_MEDIA_CAPACITY, headers=self._retry_after()) from exc
        self._check_cancelled(call, incoming)
        answer = self._negotiate(offer, media_address(leg, config.external_ip), leg.port, mode, leg.crypto)
        await self.context.legs.update(call.call_id, leg, answer)
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
        return [("Retry-After", str(self.context.retry_after))]

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
            raise SetupFailed(STATUS_CANCELLED, EndReason.CANCELLED, CallState.CANCELLED, by="remote")
        if call.abort.is_set():
            raise SetupFailed(
                480, call.abort_reason or EndReason.HANGUP, CallState.CANCELLED, by=call.abort_by
            )

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
