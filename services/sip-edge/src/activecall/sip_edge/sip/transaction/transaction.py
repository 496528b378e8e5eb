"""SIP transactions (RFC 3261 section 17, with the RFC 6026 Accepted states and timers L and M).

Four state machines: INVITE and non-INVITE, client and server. Each has an :class:`Enum` of states
and is driven by inputs named after the RFC's events; each state is a method that picks the next
state and the action, and an input a state does not expect changes nothing. The layer matches
incoming messages to transactions (RFC 3261 sections 17.1.3 and 17.2.3, with the RFC 2543 fallback)
and knows nothing of dialogs: requests without a transaction, ACKs for 2xx and responses nobody waits
for go to the :class:`TransactionUser`.

Failures reach the TU as synthetic responses: 408 when a client transaction times out, 503 when the
transport fails, with :attr:`ClientTransaction.error` set to the matching sentinel error.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Iterable
from typing import ClassVar, Protocol

from activecall import tokens
from activecall.sip_edge import metrics
from activecall.sip_edge.sip.syntax.headers import BRANCH_MAGIC_COOKIE
from activecall.sip_edge.sip.syntax.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
)
from activecall.sip_edge.sip.transaction.timers import (
    BaseIntervals,
    Cancellable,
    Scheduler,
    TimerName,
    timer_values,
)
from activecall.sip_edge.sip.transport.transport import Flow, Target, TransportError, TransportLayer

log = logging.getLogger("activecall.sip_edge.sip.transaction.transaction")

STATUS_TRYING = 100
STATUS_OK = 200
STATUS_REQUEST_TIMEOUT = 408
STATUS_NO_TRANSACTION = 481
STATUS_REQUEST_TERMINATED = 487
STATUS_SERVICE_UNAVAILABLE = 503


class TransactionError(Exception):
    """Why a client transaction ended without a real final response."""

    status: ClassVar[int] = 500


class TransactionTimeout(TransactionError):
    """Timer B or F fired (RFC 3261 sections 17.1.1.2, 17.1.2.2): the TU sees a 408."""

    status = STATUS_REQUEST_TIMEOUT


class TransactionTransportError(TransactionError):
    """The transport could not carry the request (RFC 3261 section 17.1.4): the TU sees a 503."""

    status = STATUS_SERVICE_UNAVAILABLE


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(enum.Enum):
    """Events that drive the state machines, named as in RFC 3261 section 17 and RFC 6026."""

    REQUEST = "request retransmission"
    ACK = "ACK"
    RESPONSE_1XX = "1xx"
    RESPONSE_2XX = "2xx"
    RESPONSE_300_699 = "300-699"
    TU_1XX = "TU 1xx"
    TU_2XX = "TU 2xx"
    TU_300_699 = "TU 300-699"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TIMER_TRYING = "Trying timer"
    TRANSPORT_ERROR = "transport error"


_TIMER_INPUTS = {name: Input[f"TIMER_{name.name}"] for name in TimerName}


def response_input(status: int, from_tu: bool) -> Input:
    if status < 200:
        return Input.TU_1XX if from_tu else Input.RESPONSE_1XX
    if status < 300:
        return Input.TU_2XX if from_tu else Input.RESPONSE_2XX
    return Input.TU_300_699 if from_tu else Input.RESPONSE_300_699


def new_branch() -> str:
    """A branch unique in space and time, with the RFC 3261 magic cookie (section 8.1.1.7)."""
    return BRANCH_MAGIC_COOKIE + tokens.token_hex(8)


def server_key(request: SipRequest) -> tuple[str, ...]:
    """The key matching a request to its server transaction (RFC 3261 section 17.2.3); an ACK
    matches its INVITE."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch and branch.startswith(BRANCH_MAGIC_COOKIE):
        return (branch, via.sent_by.lower(), method)
    # RFC 2543 peers: Request-URI, From tag, Call-ID, CSeq number and top Via identify it.
    cseq = request.cseq
    return (
        "2543",
        str(request.uri),
        request.from_.tag or "",
        request.call_id,
        str(cseq.number),
        via.sent_by,
        method,
    )


def client_key(message: SipRequest | SipResponse) -> tuple[str, str]:
    """Branch of the top Via and CSeq method (RFC 3261 section 17.1.3)."""
    return (message.top_via.branch or "", message.cseq.method)


class TransactionUser(Protocol):
    """What the layer above (the user agent) receives."""

    def on_request(self, request: SipRequest, tx: ServerTransaction) -> None:
        """A new request with its new server transaction (never an ACK or a CANCEL)."""

    def on_ack(self, ack: SipRequest, flow: Flow) -> None:
        """An ACK that matched no transaction, or one for a 2xx (RFC 6026 section 8.7)."""

    def on_cancel(self, invite: InviteServerTransaction, cancel: SipRequest) -> None:
        """A CANCEL for a pending INVITE; the layer has answered it 200 and answers the INVITE 487."""

    def on_stray_response(self, response: SipResponse, flow: Flow) -> None:
        """A response no client transaction waits for (2xx retransmissions after Timer M)."""


ResponseCallback = Callable[[SipResponse], None]


class Transaction:
    """Common machinery: state, timers by RFC name, logging of transitions."""

    initial_state: ClassVar[State]

    def __init__(
        self, layer: TransactionLayer, key: tuple[str, ...], request: SipRequest, reliable: bool
    ) -> None:
        self.layer = layer
        self.key = key
        self.request = request
        self.reliable = reliable
        self.timers = timer_values(layer.intervals, reliable)
        self.state = self.initial_state
        self._handles: dict[TimerName, Cancellable] = {}
        self._intervals: dict[TimerName, float] = {}
        self.on_terminated: Callable[[Transaction], None] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.key[0]} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def handle(self, event: Input, message: SipRequest | SipResponse | None = None) -> None:
        """Feed one input to the state machine."""
        if self.state is State.TERMINATED:
            return
        self._state_handler()(event, message)

    def _state_handler(self) -> Callable[[Input, SipRequest | SipResponse | None], None]:
        handler: Callable[[Input, SipRequest | SipResponse | None], None] = getattr(
            self, f"_state_{self.state.name.lower()}"
        )
        return handler

    def _set_state(self, state: State) -> None:
        log.debug("transaction %s: %s -> %s", self.key[0], self.state.value, state.value)
        self.state = state
        if state is State.TERMINATED:
            for handle in self._handles.values():
                handle.cancel()
            self._handles.clear()
            self.layer._remove(self)
            # Dropped once called: a callback that holds the transaction would otherwise keep it in a
            # reference cycle that only a full collection frees.
            callback, self.on_terminated = self.on_terminated, None
            if callback is not None:
                callback(self)

    def _start_timer(self, name: TimerName, delay: float) -> None:
        self._stop_timer(name)
        self._intervals[name] = delay
        if delay <= 0:
            self.handle(_TIMER_INPUTS[name])
            return
        self._handles[name] = self.layer.scheduler.call_later(delay, self._fire, name)

    def _stop_timer(self, name: TimerName) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _fire(self, name: TimerName) -> None:
        self._handles.pop(name, None)
        try:
            self.handle(_TIMER_INPUTS[name])
        except Exception:
            log.exception("transaction timer failed", extra={"timer": name.value})

    def _double(self, name: TimerName, capped: bool = True) -> None:
        interval = self._intervals.get(name, self.timers.t1)
        self._start_timer(name, self.timers.next_retransmit(interval) if capped else interval * 2)


# ------------------------------------------------------------------------------------- server side


class ServerTransaction(Transaction):
    """Answers one received request; the TU calls :meth:`respond`."""

    def __init__(
        self, layer: TransactionLayer, key: tuple[str, ...], request: SipRequest, flow: Flow
    ) -> None:
        super().__init__(layer, key, request, flow.transport.reliable)
        self.flow = flow
        self.last_response: SipResponse | None = None
        self._last_bytes = b""
        self._to_tag: str | None = None

    @property
    def to_tag(self) -> str:
        """The To tag of our responses: the TU's dialog tag once it responded, else a fresh one."""
        if self._to_tag is None:
            self._to_tag = tokens.token_hex(5)
        return self._to_tag

    @to_tag.setter
    def to_tag(self, tag: str) -> None:
        self._to_tag = tag

    def respond(self, response: SipResponse) -> None:
        """Send a response from the TU through the state machine."""
        tag = response.to.tag
        if tag:
            self._to_tag = tag
        self.handle(response_input(response.status, from_tu=True), response)

    def reply(
        self, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] | None = None
    ) -> SipResponse:
        """Build a response to the request with this transaction's To tag, add ``headers``, send it."""
        response = make_response(
            self.request, status, reason, None if status == STATUS_TRYING else self.to_tag
        )
        if headers is not None:
            for name, value in headers:
                response.headers.add(name, value)
        self.respond(response)
        return response

    def receive(self, request: SipRequest) -> None:
        self.handle(Input.ACK if request.method == "ACK" else Input.REQUEST, request)

    def _send(self, response: SipResponse) -> None:
        self.last_response = response
        self._last_bytes = bytes(response)
        metrics.response_counter(response.status, "out").inc()
        self.layer.transport.send_bytes(self._last_bytes, response, self.flow, self._transport_error)

    def _resend(self) -> None:
        if self.last_response is None:
            return
        metrics.RETRANSMISSIONS.labels("response").inc()
        self.layer.transport.send_bytes(
            self._last_bytes, self.last_response, self.flow, self._transport_error
        )

    def _transport_error(self, error: TransportError) -> None:
        metrics.TRANSPORT_ERRORS.labels(self.flow.transport.value).inc()
        log.info("cannot send response", extra={"error": str(error), "call_id": self.request.call_id})
        self.handle(Input.TRANSPORT_ERROR)


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 section 17.2.1 with RFC 6026 section 7.1: a 2xx moves to Accepted, and the TU
    retransmits it until the ACK (RFC 3261 section 13.3.1.4)."""

    initial_state = State.PROCEEDING

    def __init__(
        self, layer: TransactionLayer, key: tuple[str, ...], request: SipRequest, flow: Flow
    ) -> None:
        super().__init__(layer, key, request, flow)
        self.cancelled = False
        self._start_timer(TimerName.TRYING, self.timers.trying)

    def _state_proceeding(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event is Input.REQUEST:
            self._resend()
        elif event is Input.TIMER_TRYING and self.last_response is None:
            self._send(make_response(self.request, STATUS_TRYING))
        elif event is Input.TU_1XX and isinstance(message, SipResponse):
            self._stop_timer(TimerName.TRYING)
            self._send(message)
        elif event is Input.TU_2XX and isinstance(message, SipResponse):
            self._stop_timer(TimerName.TRYING)
            self._send(message)
            self._set_state(State.ACCEPTED)
            self._start_timer(TimerName.L, self.timers.l)
        elif event is Input.TU_300_699 and isinstance(message, SipResponse):
            self._stop_timer(TimerName.TRYING)
            self._send(message)
            self._set_state(State.COMPLETED)
            if not self.reliable:
                self._start_timer(TimerName.G, self.timers.g)
            self._start_timer(TimerName.H, self.timers.h)
        elif event is Input.TRANSPORT_ERROR:
            self._set_state(State.TERMINATED)

    def _state_accepted(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event is Input.TU_2XX and isinstance(message, SipResponse):
            self._send(message)
        elif event is Input.ACK and isinstance(message, SipRequest):
            self.layer.tu.on_ack(message, self.flow)
        elif event is Input.TIMER_L:
            self._set_state(State.TERMINATED)
        # Retransmitted INVITEs are absorbed: the TU's own 2xx retransmissions answer them.

    def _state_completed(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event is Input.REQUEST:
            self._resend()
        elif event is Input.TIMER_G:
            self._resend()
            self._double(TimerName.G)
        elif event is Input.ACK:
            self._stop_timer(TimerName.G)
            self._stop_timer(TimerName.H)
            self._set_state(State.CONFIRMED)
            self._start_timer(TimerName.I, self.timers.i)
        elif event is Input.TIMER_H:
            log.info("no ACK for a final response", extra={"call_id": self.request.call_id})
            self._set_state(State.TERMINATED)
        elif event is Input.TRANSPORT_ERROR:
            self._set_state(State.TERMINATED)

    def _state_confirmed(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event is Input.TIMER_I:
            self._set_state(State.TERMINATED)
        # ACK retransmissions are absorbed.


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 section 17.2.2."""

    initial_state = State.TRYING

    def _final(self, response: SipResponse) -> None:
        self._send(response)
        self._set_state(State.COMPLETED)
        self._start_timer(TimerName.J, self.timers.j)

    def _state_trying(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event is Input.TU_1XX and isinstance(message, SipResponse):
            self._send(message)
            self._set_state(State.PROCEEDING)
        elif event in (Input.TU_2XX, Input.TU_300_699) and isinstance(message, SipResponse):
            self._final(message)
        elif event is Input.TRANSPORT_ERROR:
            self._set_state(State.TERMINATED)
        # Retransmissions in Trying are absorbed: there is nothing to answer with yet.

    def _state_proceeding(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event is Input.REQUEST:
            self._resend()
        elif event is Input.TU_1XX and isinstance(message, SipResponse):
            self._send(message)
        elif event in (Input.TU_2XX, Input.TU_300_699) and isinstance(message, SipResponse):
            self._final(message)
        elif event is Input.TRANSPORT_ERROR:
            self._set_state(State.TERMINATED)

    def _state_completed(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event is Input.REQUEST:
            self._resend()
        elif event in (Input.TIMER_J, Input.TRANSPORT_ERROR):
            self._set_state(State.TERMINATED)


# ------------------------------------------------------------------------------------- client side


class ClientTransaction(Transaction):
    """Sends one request and reports every response to ``on_response``."""

    def __init__(
        self,
        layer: TransactionLayer,
        request: SipRequest,
        dest: Target | Flow,
        on_response: ResponseCallback | None = None,
    ) -> None:
        super().__init__(layer, client_key(request), request, dest.transport.reliable)
        self.dest = dest
        self.on_response = on_response
        self.error: TransactionError | None = None
        self.final_response: SipResponse | None = None
        self._bytes = bytes(request)
        self._final_future: asyncio.Future[SipResponse] | None = None

    def start(self) -> None:
        metrics.request_counter(self.request.method, "out").inc()
        self._start_timers()
        self._transmit()

    def _start_timers(self) -> None:
        raise NotImplementedError

    def receive(self, response: SipResponse) -> None:
        metrics.response_counter(response.status, "in").inc()
        self.handle(response_input(response.status, from_tu=False), response)

    async def wait_final(self) -> SipResponse:
        """The final response (or the synthetic 408/503)."""
        if self.final_response is not None:
            return self.final_response
        if self._final_future is None:
            self._final_future = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._final_future)

    def _to_tu(self, response: SipResponse) -> None:
        if response.status >= 200 and self.final_response is None:
            self.final_response = response
            future = self._final_future
            if future is not None and not future.done():
                future.set_result(response)
        if self.on_response is not None:
            self.on_response(response)

    def _fail(self, error: TransactionError) -> None:
        """End with a synthetic response carrying the sentinel error's status."""
        self.error = error
        if isinstance(error, TransactionTimeout):
            metrics.TRANSACTION_TIMEOUTS.labels(metrics.method_label(self.request.method)).inc()
        self._set_state(State.TERMINATED)
        self._to_tu(make_response(self.request, error.status, str(error) or None))

    def _transmit(self) -> None:
        self.layer.transport.send_bytes(self._bytes, self.request, self.dest, self._transport_error)

    def _retransmit(self) -> None:
        metrics.RETRANSMISSIONS.labels("request").inc()
        self._transmit()

    def _transport_error(self, error: TransportError) -> None:
        metrics.TRANSPORT_ERRORS.labels(self.dest.transport.value).inc()
        log.info("cannot send request", extra={"error": str(error), "call_id": self.request.call_id})
        self.handle(Input.TRANSPORT_ERROR)

    def give_up(self) -> None:
        """End now as if Timer B/F fired: the TU sees a 408 (RFC 3261 section 9.1, a CANCEL that got
        no final response for the INVITE)."""
        if not self.terminated:
            self._fail(TransactionTimeout("Request Timeout"))

    def terminate(self) -> None:
        """Stop at once, reporting nothing (the TU gave up, e.g. to try the next address)."""
        if not self.terminated:
            self._set_state(State.TERMINATED)


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 section 17.1.1 with RFC 6026 section 7.2 (Accepted state, Timer M)."""

    initial_state = State.CALLING

    def _start_timers(self) -> None:
        if not self.reliable:
            self._start_timer(TimerName.A, self.timers.a)
        self._start_timer(TimerName.B, self.timers.b)

    def make_ack(self, response: SipResponse) -> SipRequest:
        """The ACK for a non-2xx final response (RFC 3261 section 17.1.1.3)."""
        headers = Headers()
        source = self.request.headers
        headers.add("Via", source.get_list("Via")[0])
        for name in ("Route",):
            for value in source.get_all(name):
                headers.add(name, value)
        headers.add("Max-Forwards", "70")
        headers.add("From", source.get("From") or "")
        headers.add("To", response.headers.get("To") or "")
        headers.add("Call-ID", self.request.call_id)
        headers.add("CSeq", f"{self.request.cseq.number} ACK")
        return SipRequest("ACK", self.request.uri, headers)

    def make_cancel(self) -> SipRequest:
        """The CANCEL for this INVITE (RFC 3261 section 9.1)."""
        headers = Headers()
        source = self.request.headers
        headers.add("Via", source.get_list("Via")[0])
        for value in source.get_all("Route"):
            headers.add("Route", value)
        headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            headers.add(name, source.get(name) or "")
        headers.add("CSeq", f"{self.request.cseq.number} CANCEL")
        return SipRequest("CANCEL", self.request.uri, headers)

    def _send_ack(self, response: SipResponse) -> None:
        self._ack = self.make_ack(response)
        self._ack_bytes = bytes(self._ack)
        self.layer.transport.send_bytes(self._ack_bytes, self._ack, self.dest, None)

    def _resend_ack(self) -> None:
        self.layer.transport.send_bytes(self._ack_bytes, self._ack, self.dest, None)

    def _state_calling(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event is Input.TIMER_A:
            self._retransmit()
            self._double(TimerName.A, capped=False)
        elif event is Input.TIMER_B:
            self._fail(TransactionTimeout("Request Timeout"))
        elif event is Input.RESPONSE_1XX and isinstance(message, SipResponse):
            self._stop_timer(TimerName.A)
            self._stop_timer(TimerName.B)
            self._set_state(State.PROCEEDING)
            self._to_tu(message)
        elif event is Input.TRANSPORT_ERROR:
            self._fail(TransactionTransportError("Service Unavailable"))
        else:
            self._state_proceeding(event, message)

    def _state_proceeding(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if not isinstance(message, SipResponse):
            return
        if event is Input.RESPONSE_1XX:
            self._to_tu(message)
        elif event is Input.RESPONSE_2XX:
            self._stop_timer(TimerName.A)
            self._stop_timer(TimerName.B)
            self._set_state(State.ACCEPTED)
            self._start_timer(TimerName.M, self.timers.m)
            self._to_tu(message)
        elif event is Input.RESPONSE_300_699:
            self._stop_timer(TimerName.A)
            self._stop_timer(TimerName.B)
            self._send_ack(message)
            self._set_state(State.COMPLETED)
            self._to_tu(message)
            self._start_timer(TimerName.D, self.timers.d)

    def _state_completed(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event is Input.RESPONSE_300_699:
            self._resend_ack()
        elif event in (Input.TIMER_D, Input.TRANSPORT_ERROR):
            self._set_state(State.TERMINATED)

    def _state_accepted(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event is Input.RESPONSE_2XX and isinstance(message, SipResponse):
            self._to_tu(message)
        elif event is Input.TIMER_M:
            self._set_state(State.TERMINATED)


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 section 17.1.2."""

    initial_state = State.TRYING

    def _start_timers(self) -> None:
        if not self.reliable:
            self._start_timer(TimerName.E, self.timers.e)
        self._start_timer(TimerName.F, self.timers.f)

    def _final(self, response: SipResponse) -> None:
        self._stop_timer(TimerName.E)
        self._stop_timer(TimerName.F)
        self._set_state(State.COMPLETED)
        self._to_tu(response)
        self._start_timer(TimerName.K, self.timers.k)

    def _state_trying(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event is Input.TIMER_E:
            self._retransmit()
            self._double(TimerName.E)
        elif event is Input.RESPONSE_1XX and isinstance(message, SipResponse):
            self._set_state(State.PROCEEDING)
            self._to_tu(message)
        else:
            self._state_proceeding(event, message)

    def _state_proceeding(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event is Input.TIMER_E:
            self._retransmit()
            self._start_timer(TimerName.E, self.timers.t2)
        elif event is Input.TIMER_F:
            self._fail(TransactionTimeout("Request Timeout"))
        elif event is Input.TRANSPORT_ERROR:
            self._fail(TransactionTransportError("Service Unavailable"))
        elif event is Input.RESPONSE_1XX and isinstance(message, SipResponse):
            self._to_tu(message)
        elif event in (Input.RESPONSE_2XX, Input.RESPONSE_300_699) and isinstance(message, SipResponse):
            self._final(message)

    def _state_completed(self, event: Input, message: SipRequest | SipResponse | None) -> None:
        if event in (Input.TIMER_K, Input.TRANSPORT_ERROR):
            self._set_state(State.TERMINATED)
        # Response retransmissions are absorbed.


# ------------------------------------------------------------------------------------- the layer


class TransactionLayer:
    """Creates and matches transactions between the transport and the TU."""

    def __init__(
        self,
        transport: TransportLayer,
        tu: TransactionUser,
        intervals: BaseIntervals | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.transport = transport
        self.tu = tu
        self.intervals = intervals or BaseIntervals()
        self._scheduler = scheduler
        self._server: dict[tuple[str, ...], ServerTransaction] = {}
        self._client: dict[tuple[str, ...], ClientTransaction] = {}
        transport.handler = self.receive

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            self._scheduler = _LoopScheduler(asyncio.get_running_loop())
        return self._scheduler

    @property
    def counts(self) -> tuple[int, int]:
        """Live (server, client) transactions."""
        return len(self._server), len(self._client)

    # ---------------------------------------------------------------- sending

    def send_request(
        self, request: SipRequest, dest: Target | Flow, on_response: ResponseCallback | None = None
    ) -> ClientTransaction:
        """Start a client transaction for ``request``, whose top Via must carry a fresh branch."""
        if request.method == "ACK":
            raise ValueError("an ACK is not a transaction; send it with the transport")
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        tx = cls(self, request, dest, on_response)
        self._client[tx.key] = tx
        tx.start()
        return tx

    # ---------------------------------------------------------------- receiving

    def receive(self, message: SipRequest | SipResponse, flow: Flow) -> None:
        """Entry point for the transport: match, or hand to the TU."""
        if isinstance(message, SipResponse):
            self._receive_response(message, flow)
        else:
            self._receive_request(message, flow)

    def _receive_response(self, response: SipResponse, flow: Flow) -> None:
        tx = self._client.get(client_key(response))
        if tx is None:
            metrics.response_counter(response.status, "in").inc()
            self.tu.on_stray_response(response, flow)
        else:
            tx.receive(response)

    def _receive_request(self, request: SipRequest, flow: Flow) -> None:
        metrics.request_counter(request.method, "in").inc()
        try:
            key = server_key(request)
        except SipParseError as exc:
            self._reject_unmatchable(request, flow, exc)
            return
        tx = self._server.get(key)
        if tx is not None:
            tx.receive(request)
            return
        if request.method == "ACK":
            self.tu.on_ack(request, flow)
            return
        if request.method == "CANCEL":
            self._receive_cancel(request, key, flow)
            return
        cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
        server_tx = cls(self, key, request, flow)
        self._server[key] = server_tx
        self.tu.on_request(request, server_tx)

    def _receive_cancel(self, cancel: SipRequest, key: tuple[str, ...], flow: Flow) -> None:
        """RFC 3261 section 9.2: 200 to the CANCEL, then 487 to the INVITE if it is still pending."""
        tx = NonInviteServerTransaction(self, key, cancel, flow)
        self._server[key] = tx
        invite = self._server.get((*key[:-1], "INVITE"))
        if not isinstance(invite, InviteServerTransaction):
            tx.reply(STATUS_NO_TRANSACTION)
            return
        tx.to_tag = invite.to_tag
        tx.reply(STATUS_OK)
        if invite.state is not State.PROCEEDING:
            return
        invite.cancelled = True
        self.tu.on_cancel(invite, cancel)
        if invite.state is State.PROCEEDING:
            invite.reply(STATUS_REQUEST_TERMINATED)

    def _reject_unmatchable(self, request: SipRequest, flow: Flow, error: SipParseError) -> None:
        metrics.PARSE_ERRORS.labels(flow.transport.value).inc()
        if request.method == "ACK":
            return
        try:
            self.transport.send(make_response(request, 400, error.reason), flow)
        except (TransportError, SipParseError, ValueError):
            pass

    def _remove(self, tx: Transaction) -> None:
        table: dict[tuple[str, ...], ServerTransaction] | dict[tuple[str, ...], ClientTransaction]
        table = self._server if isinstance(tx, ServerTransaction) else self._client
        if table.get(tx.key) is tx:
            del table[tx.key]


class _LoopScheduler:
    """The running event loop as a :class:`Scheduler`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call_later(self, delay: float, callback: Callable[..., object], *args: object) -> Cancellable:
        return self.loop.call_later(delay, callback, *args)
