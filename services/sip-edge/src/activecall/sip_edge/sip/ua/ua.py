"""The user agent: the transaction user that turns transactions into calls (RFC 3261 sections 8, 12-15).

It answers what needs no application (OPTIONS, requests for unknown dialogs, unsupported methods),
hands new INVITEs to the application as :class:`IncomingCall`, places calls with
:class:`OutgoingCall` (digest retry on 401/407, CANCEL, RFC 3263 failover across addresses), and
routes in-dialog requests, ACKs and late 2xx to their
:class:`~activecall.sip_edge.sip.dialog.session.InviteSession`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from activecall import tokens
from activecall.sip_edge import metrics
from activecall.sip_edge.sip.dialog.capabilities import (
    ACCEPTED_TYPES,
    CONTENT_SDP,
    SUPPORTED,
    allow_headers,
    capability_headers,
)
from activecall.sip_edge.sip.dialog.dialog import MAX_FORWARDS, Dialog, DialogError, new_tag
from activecall.sip_edge.sip.dialog.session import InviteSession, SessionListener
from activecall.sip_edge.sip.dialog.session_timer import (
    MIN_SE,
    REFRESHER_UAC,
    REFRESHER_UAS,
    STATUS_INTERVAL_TOO_SMALL,
    IntervalTooBrief,
    SessionExpires,
    SessionTimerError,
    negotiate_uas,
    session_expires,
    supports_timer,
)
from activecall.sip_edge.sip.dialog.snapshot import DialogSnapshot, restore_dialog
from activecall.sip_edge.sip.syntax.digest import (
    CHALLENGE_HEADERS,
    DigestClient,
    DigestError,
    select_challenge,
)
from activecall.sip_edge.sip.syntax.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
    validate_request,
)
from activecall.sip_edge.sip.syntax.uri import NameAddr, SipUri
from activecall.sip_edge.sip.transaction.timers import BaseIntervals, Scheduler
from activecall.sip_edge.sip.transaction.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    ServerTransaction,
    State,
    Transaction,
    TransactionLayer,
    new_branch,
)
from activecall.sip_edge.sip.transport.resolver import ResolveError, Resolver
from activecall.sip_edge.sip.transport.transport import (
    Destination,
    Flow,
    Target,
    Transport,
    TransportError,
    TransportLayer,
)

log = logging.getLogger("activecall.sip_edge.sip.ua.ua")

FAILOVER_TIMEOUT = 4.0
MAX_AUTH_ATTEMPTS = 2

ResponseCallback = Callable[[SipResponse], None]
# Given a request for a dialog the user agent does not hold; True when it will answer it (late, through
# :meth:`UserAgent.dispatch`), False to have it answered 481 at once.
UnknownDialogHandler = Callable[[SipRequest, ServerTransaction], bool]


@dataclass(frozen=True)
class UaSettings:
    user_agent: str = "active-call"
    contact_user: str = "active-call"
    # Smallest session interval we accept (RFC 4028 section 5); tests lower it.
    min_se: int = MIN_SE
    # RFC 3263 failover: the next address is tried after this long without any response.
    failover_timeout: float = FAILOVER_TIMEOUT


class UaListener(Protocol):
    def on_invite(self, call: IncomingCall) -> None:
        """A new INVITE; the application answers through ``call`` (it may take its time: the
        transaction sends 100 Trying after 200 ms)."""


class IncomingCall:
    """A received INVITE awaiting our answer (RFC 3261 section 13.3)."""

    def __init__(self, ua: UserAgent, request: SipRequest, tx: InviteServerTransaction) -> None:
        self.ua = ua
        self.request = request
        self.tx = tx
        self.local_tag = new_tag()
        tx.to_tag = self.local_tag
        self.cancelled = asyncio.Event()
        self.timer = negotiate_uas(request, ua.settings.min_se)
        self.session: InviteSession | None = None

    @property
    def flow(self) -> Flow:
        return self.tx.flow

    @property
    def pending(self) -> bool:
        """True while a final response can still be sent."""
        return self.tx.state is State.PROCEEDING and not self.cancelled.is_set()

    def trying(self) -> None:
        if self.pending and self.tx.last_response is None:
            self.tx.reply(100)

    def progress(self, status: int = 180, body: bytes = b"") -> None:
        """A provisional response; with ``body`` (an SDP answer) it starts early media."""
        if not self.pending:
            return
        response = self._response(status, body)
        self.tx.respond(response)

    def reject(self, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = ()) -> None:
        if self.pending:
            self.tx.reply(status, reason, headers)

    def accept(
        self, body: bytes, listener: SessionListener, headers: Iterable[tuple[str, str]] = ()
    ) -> InviteSession:
        """Answer 200 with ``body`` and return the session; the 2xx is retransmitted until the ACK."""
        if not self.pending:
            raise DialogError("the INVITE can no longer be answered")
        contact = self.ua.contact(self.flow.transport)
        dialog = Dialog.as_uas(self.request, self.local_tag, contact)
        response = self._response(200, body)
        for name, value in headers:
            response.headers.add(name, value)
        if self.timer is not None:
            response.headers.add("Session-Expires", str(self.timer))
            if supports_timer(self.request):
                response.headers.add("Require", "timer")
        session = self.ua._open_session(dialog, self.request, self.flow, listener, body, self.request.body)
        session.peer_allow = self.ua.allowed_methods(self.request)
        if self.timer is not None:
            session.start_timer(self.timer, REFRESHER_UAS)
        self.session = session
        session.send_2xx(self.tx, response)
        return session

    def _response(self, status: int, body: bytes) -> SipResponse:
        response = make_response(self.request, status, to_tag=self.local_tag)
        headers = response.headers
        # RFC 3261 section 12.1.1: responses that create a dialog echo the Record-Route.
        for value in self.request.headers.get_all("Record-Route"):
            headers.add("Record-Route", value)
        headers.add("Contact", str(self.ua.contact(self.flow.transport)))
        for name, value in capability_headers():
            headers.add(name, value)
        if body:
            headers.add("Content-Type", CONTENT_SDP)
            response.body = body
        return response


class OutgoingCall:
    """An INVITE we send (RFC 3261 section 13.2): :meth:`run` returns the final response; after a
    2xx :attr:`session` is up and ACKed. :meth:`cancel` sends CANCEL once the callee answered
    provisionally (section 9.1)."""

    def __init__(
        self,
        ua: UserAgent,
        uri: SipUri,
        from_: NameAddr,
        to: NameAddr,
        listener: SessionListener,
        *,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        credentials: DigestClient | None = None,
        on_progress: ResponseCallback | None = None,
    ) -> None:
        self.ua = ua
        self.uri = uri
        self.from_ = from_.with_params(tag=new_tag())
        self.to = to
        self.listener = listener
        self.body = body
        self.extra_headers = list(headers)
        self.credentials = credentials
        self.on_progress = on_progress
        self.call_id = ua.new_call_id()
        self.cseq = 1
        self.session: InviteSession | None = None
        self.cancelled = False
        self._tx: InviteClientTransaction | None = None
        self._provisional = False
        self._cancel_sent = False
        self._auth: tuple[str, str] | None = None
        self._request: SipRequest | None = None
        self._forks: set[str | None] = set()

    def build_request(self) -> SipRequest:
        headers = Headers()
        headers.add("Via", "SIP/2.0/UDP invalid;branch=z9hG4bK")  # replaced per attempt
        headers.add("Max-Forwards", str(MAX_FORWARDS))
        headers.add("From", str(self.from_))
        headers.add("To", str(self.to))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.cseq} INVITE")
        headers.add("Contact", str(self.ua.contact(Transport.UDP)))
        for name, value in capability_headers():
            headers.add(name, value)
        headers.add("User-Agent", self.ua.settings.user_agent)
        for name, value in self.extra_headers:
            headers.add(name, value)
        if self._auth is not None:
            headers.add(*self._auth)
        if self.body:
            headers.add("Content-Type", CONTENT_SDP)
        return SipRequest("INVITE", self.uri, headers, self.body)

    async def run(self) -> SipResponse:
        request = self.build_request()
        try:
            targets: list[Destination] = list(await self.ua.resolver.resolve(self.uri))
        except (ResolveError, TransportError) as exc:
            return make_response(request, 503, str(exc))
        for _ in range(MAX_AUTH_ATTEMPTS + 1):
            if self.cancelled:
                return make_response(request, 487)
            self._request = request
            response = await self.ua.send(
                request, targets, on_response=self._on_response, on_transaction=self._on_transaction
            )
            if response.status not in CHALLENGE_HEADERS or not self._answer_challenge(response, request):
                break
            self.cseq += 1
            request = self.build_request()
        if 200 <= response.status < 300:
            await self._established(request, response)
        return response

    def _answer_challenge(self, response: SipResponse, request: SipRequest) -> bool:
        if self.credentials is None or self.cancelled:
            return False
        challenge_header, credentials_header = CHALLENGE_HEADERS[response.status]
        try:
            challenge = select_challenge(response.headers.get_all(challenge_header))
            if self._auth is not None and not challenge.stale:
                return False  # the same credentials were refused
            value = self.credentials.authorize(challenge, "INVITE", str(self.uri), request.body)
        except (DigestError, SipParseError) as exc:
            log.info("cannot answer the challenge", extra={"call_id": self.call_id, "error": str(exc)})
            return False
        self._auth = (credentials_header, value)
        return True

    async def _established(self, request: SipRequest, response: SipResponse) -> None:
        dialog = Dialog.as_uac(request, response)
        tx = self._tx
        flow = tx.dest if tx is not None and isinstance(tx.dest, Flow) else None
        session = self.ua._open_session(dialog, request, flow, self.listener, self.body, response.body)
        session.credentials = self.credentials
        session.peer_allow = self.ua.allowed_methods(response)
        self.session = session
        await session.send_ack(request)
        try:
            timer = session_expires(response)
        except SessionTimerError:
            timer = None
        if timer is not None:
            session.start_timer(
                SessionExpires(timer.interval, timer.refresher or REFRESHER_UAC), REFRESHER_UAC
            )
        if self.cancelled:
            await session.bye("cancelled")

    def _on_transaction(self, tx: ClientTransaction) -> None:
        assert isinstance(tx, InviteClientTransaction)
        self._tx = tx
        self._provisional = False

    def _on_response(self, response: SipResponse) -> None:
        if response.status < 200:
            self._provisional = True
            if self.cancelled:
                self._send_cancel()
            elif self.on_progress is not None and response.status > 100:
                self.on_progress(response)
        elif response.status < 300 and self.session is not None:
            if response.to.tag == self.session.dialog.remote_tag:
                self.session.on_2xx_retransmission(response)
            elif response.to.tag not in self._forks and self._request is not None:
                self._forks.add(response.to.tag)
                self.session.spawn(self._end_fork(self._request, response), f"fork-{self.call_id}")

    async def _end_fork(self, request: SipRequest, response: SipResponse) -> None:
        """Another branch answered too: ACK it and hang it up (RFC 3261 section 13.2.2.4)."""
        fork = self.ua._open_session(Dialog.as_uac(request, response), request, None, SessionListener())
        await fork.send_ack(request)
        await fork.bye("forked answer")

    def cancel(self) -> None:
        """Give up on the call: CANCEL now if the callee answered provisionally, else on its first
        provisional response; a 2xx that crosses the CANCEL is ACKed and ended with BYE."""
        self.cancelled = True
        if self._provisional:
            self._send_cancel()

    def _send_cancel(self) -> None:
        tx = self._tx
        if self._cancel_sent or tx is None or tx.state not in (State.CALLING, State.PROCEEDING):
            return
        self._cancel_sent = True
        self.ua.transactions.send_request(tx.make_cancel(), tx.dest)
        # RFC 3261 section 9.1: without a final response in 64*T1 the INVITE is considered cancelled.
        self.ua.scheduler.call_later(64 * self.ua.intervals.t1, self._give_up, tx)

    def _give_up(self, tx: InviteClientTransaction) -> None:
        if tx.state in (State.CALLING, State.PROCEEDING):
            tx.give_up()


class UserAgent:
    """The transaction user of the edge: dialogs, sessions and the requests no session owns."""

    def __init__(
        self,
        transport: TransportLayer,
        listener: UaListener,
        *,
        resolver: Resolver | None = None,
        settings: UaSettings | None = None,
        intervals: BaseIntervals | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.transport = transport
        self.listener = listener
        self.resolver = resolver or Resolver()
        self.settings = settings or UaSettings()
        self.transactions = TransactionLayer(transport, self, intervals, scheduler)
        self.sessions: dict[tuple[str, str, str], InviteSession] = {}
        self._incoming: dict[Transaction, IncomingCall] = {}
        self.unknown_dialog_handler: UnknownDialogHandler | None = None

    @property
    def intervals(self) -> BaseIntervals:
        return self.transactions.intervals

    @property
    def scheduler(self) -> Scheduler:
        return self.transactions.scheduler

    @property
    def min_se(self) -> int:
        return self.settings.min_se

    # ---------------------------------------------------------------- identity

    def new_call_id(self) -> str:
        return f"{tokens.token_hex(12)}@{self.transport.sent_by(Transport.UDP)[0]}"

    def contact(self, transport: Transport, user: str | None = None) -> NameAddr:
        host, port = self.transport.sent_by(transport)
        params: dict[str, str | None] = (
            {} if transport is Transport.UDP else {"transport": transport.uri_param}
        )
        return NameAddr(SipUri("sip", user or self.settings.contact_user, None, _bracket(host), port, params))

    @staticmethod
    def allowed_methods(message: SipRequest | SipResponse) -> frozenset[str]:
        return frozenset(m.strip().upper() for m in message.headers.get_list("Allow") if m.strip())

    # ---------------------------------------------------------------- sending

    def stamp_via(self, request: SipRequest, dest: Destination) -> None:
        """Our Via, with a fresh branch, for the transport of ``dest`` (RFC 3261 section 8.1.1.7)."""
        host, port = self.transport.sent_by(dest.transport)
        via = f"SIP/2.0/{dest.transport.value} {_bracket(host)}:{port};branch={new_branch()};rport"
        request.headers.set("Via", via)

    async def send(
        self,
        request: SipRequest,
        targets: list[Destination],
        *,
        on_response: ResponseCallback | None = None,
        on_transaction: Callable[[ClientTransaction], None] | None = None,
    ) -> SipResponse:
        """Send ``request`` to each target in turn until one answers (RFC 3263 section 4.3): the next
        is tried after a transport error, a 503, or :attr:`UaSettings.failover_timeout` of silence."""
        response: SipResponse | None = None
        for index, dest in enumerate(targets):
            last = index == len(targets) - 1
            self._prepare(request, dest)
            answered = asyncio.Event()

            def relay(message: SipResponse, answered: asyncio.Event = answered) -> None:
                answered.set()
                if on_response is not None:
                    on_response(message)

            tx = self.transactions.send_request(request, dest, relay)
            if on_transaction is not None:
                on_transaction(tx)
            if not last and not answered.is_set():
                try:
                    await asyncio.wait_for(answered.wait(), self.settings.failover_timeout)
                except TimeoutError:
                    tx.terminate()
                    continue
            response = await tx.wait_final()
            if not last and (tx.error is not None or response.status == 503):
                continue
            return response
        assert response is not None or not targets
        return response or make_response(request, 503, "No Destination")

    def _prepare(self, request: SipRequest, dest: Destination) -> None:
        self.stamp_via(request, dest)
        if request.method in ("INVITE", "REGISTER", "SUBSCRIBE", "REFER", "UPDATE", "NOTIFY"):
            contact = request.headers.get("Contact")
            if contact is not None and self._is_own_contact(contact):
                request.headers.set("Contact", str(self.contact(dest.transport, _contact_user(contact))))

    def _is_own_contact(self, value: str) -> bool:
        try:
            uri = NameAddr.parse(value).uri
        except SipParseError:
            return False
        hosts = {_bracket(self.transport.sent_by(t)[0]) for t in Transport}
        return isinstance(uri, SipUri) and uri.host in hosts

    async def request_to(self, request: SipRequest, uri: SipUri | None = None) -> SipResponse:
        """Send an out-of-dialog request to ``uri`` (default: its Request-URI)."""
        destination = uri or request.uri
        if not isinstance(destination, SipUri):
            return make_response(request, 416)
        try:
            targets: list[Destination] = list(await self.resolver.resolve(destination))
        except (ResolveError, TransportError) as exc:
            return make_response(request, 503, str(exc))
        return await self.send(request, targets)

    async def options(self, uri: SipUri, from_: NameAddr | None = None) -> SipResponse:
        """An out-of-dialog OPTIONS ping (RFC 3261 section 11)."""
        headers = Headers()
        headers.add("Via", "SIP/2.0/UDP invalid;branch=z9hG4bK")
        headers.add("Max-Forwards", str(MAX_FORWARDS))
        sender = from_ or self.contact(Transport.UDP)
        headers.add("From", str(NameAddr(sender.uri).with_params(tag=new_tag())))
        headers.add("To", str(NameAddr(uri)))
        headers.add("Call-ID", self.new_call_id())
        headers.add("CSeq", "1 OPTIONS")
        headers.add("Accept", CONTENT_SDP)
        headers.add("User-Agent", self.settings.user_agent)
        return await self.request_to(SipRequest("OPTIONS", uri, headers))

    async def dialog_destination(self, session: InviteSession) -> Destination:
        return (await self.dialog_targets(session))[0]

    async def dialog_targets(self, session: InviteSession) -> list[Destination]:
        """Where in-dialog requests go: the route set's first hop or the remote target, over the
        connection the dialog arrived on when it leads to the same host (RFC 5923 reuse)."""
        hop = session.dialog.next_hop
        if not isinstance(hop, SipUri) or not hop.host:
            raise TransportError(f"cannot route to {hop}")
        targets: list[Destination] = list(await self.resolver.resolve(hop))
        flow = session.flow
        if flow is not None and flow.transport.reliable and flow.open:
            for target in targets:
                if (
                    isinstance(target, Target)
                    and target.transport is flow.transport
                    and target.host == flow.remote[0]
                ):
                    return [flow]
        return targets

    async def send_in_dialog(
        self, session: InviteSession, request: SipRequest
    ) -> tuple[SipResponse, SipRequest]:
        """Send a request within ``session``; a 401/407 is answered once with the session's
        credentials, with the CSeq moved on (RFC 3261 section 22.2)."""
        try:
            targets = await self.dialog_targets(session)
        except TransportError as exc:
            return make_response(request, 503, str(exc)), request
        response = await self.send(request, targets)
        credentials = session.credentials
        if response.status not in CHALLENGE_HEADERS or credentials is None:
            return response, request
        challenge_header, credentials_header = CHALLENGE_HEADERS[response.status]
        try:
            challenge = select_challenge(response.headers.get_all(challenge_header))
            value = credentials.authorize(challenge, request.method, str(request.uri), request.body)
        except (DigestError, SipParseError):
            return response, request
        session.dialog.local_seq += 1
        request.headers.set("CSeq", f"{session.dialog.local_seq} {request.method}")
        request.headers.set(credentials_header, value)
        return await self.send(request, targets), request

    # ---------------------------------------------------------------- sessions

    def _open_session(
        self,
        dialog: Dialog,
        invite: SipRequest,
        flow: Flow | None,
        listener: SessionListener,
        local_sdp: bytes = b"",
        remote_sdp: bytes = b"",
    ) -> InviteSession:
        """A session in the table of established dialogs, until it tells us it ended."""
        session = InviteSession(
            self, dialog, invite, flow, listener, local_sdp, remote_sdp, on_close=self._session_closed
        )
        self.sessions[session.dialog.key] = session
        metrics.DIALOGS.set(len(self.sessions))
        return session

    def restore_session(
        self, snapshot: DialogSnapshot, listener: SessionListener, flow: Flow | None = None
    ) -> InviteSession:
        """Go on with a session another process established (RFC 3261 section 12.2: the dialog
        state is all a UA needs), reached from now on at our own Contact. ``flow`` is the connection
        a request of the dialog just came on, if any; otherwise requests go where the dialog says,
        over a new connection for TCP and TLS."""
        transport = Transport.from_name(snapshot.transport) if snapshot.transport else Transport.UDP
        user = _contact_user(snapshot.local_contact)
        dialog = restore_dialog(snapshot, self.contact(transport, user))
        # The INVITE that made the dialog is gone with its process; a session only keeps it.
        invite = dialog.create_request("INVITE", cseq=dialog.local_seq)
        session = self._open_session(dialog, invite, flow, listener, snapshot.local_sdp, snapshot.remote_sdp)
        session.peer_allow = frozenset(snapshot.peer_allow)
        session.acked.set()  # our 2xx was ACKed to the other process, or never will be
        return session

    def dispatch(self, request: SipRequest, tx: ServerTransaction) -> None:
        """Hand an in-dialog request to its session, or answer 481 (RFC 3261 section 12.2.2)."""
        session = self._session_for(request, incoming=True)
        if session is None:
            tx.reply(481)
        else:
            session.on_request(request, tx)

    def _session_closed(self, session: InviteSession) -> None:
        if self.sessions.get(session.dialog.key) is session:
            del self.sessions[session.dialog.key]
            metrics.DIALOGS.set(len(self.sessions))

    def _session_for(self, message: SipRequest | SipResponse, incoming: bool) -> InviteSession | None:
        try:
            ours, theirs = (
                (message.to.tag, message.from_.tag) if incoming else (message.from_.tag, message.to.tag)
            )
            return self.sessions.get((message.call_id, ours or "", theirs or ""))
        except SipParseError:
            return None

    # ---------------------------------------------------------------- transaction user

    def on_request(self, request: SipRequest, tx: ServerTransaction) -> None:
        problem = validate_request(
            request, endpoint=True, extensions={SUPPORTED}, content_types=ACCEPTED_TYPES
        )
        if problem is not None:
            status, reason = problem
            tx.reply(status, reason, self._problem_headers(status))
            return
        if request.to.tag:
            session = self._session_for(request, incoming=True)
            if session is not None:
                session.on_request(request, tx)
            elif request.method == "ACK" or not self._hand_over(request, tx):
                tx.reply(481)
            return
        if request.method == "INVITE":
            assert isinstance(tx, InviteServerTransaction)
            self._on_invite(request, tx)
        elif request.method == "OPTIONS":
            tx.reply(200, headers=capability_headers())
        elif request.method in ("BYE", "INFO", "NOTIFY", "UPDATE", "PRACK", "REFER"):
            tx.reply(481)
        else:
            tx.reply(405, headers=allow_headers())

    def _hand_over(self, request: SipRequest, tx: ServerTransaction) -> bool:
        handler = self.unknown_dialog_handler
        return handler is not None and handler(request, tx)

    def _problem_headers(self, status: int) -> list[tuple[str, str]]:
        if status == 415:
            return [("Accept", ", ".join(ACCEPTED_TYPES))]
        if status == 420:
            return [("Unsupported", "")]
        if status in (405, 501):
            return allow_headers()
        return []

    def _on_invite(self, request: SipRequest, tx: InviteServerTransaction) -> None:
        if request.body and request.content_type != CONTENT_SDP:
            tx.reply(415, headers=[("Accept", CONTENT_SDP)])
            return
        if not request.contacts or not request.from_.tag:
            tx.reply(400, "Missing Contact or From tag")
            return
        try:
            call = IncomingCall(self, request, tx)
        except IntervalTooBrief as exc:
            tx.reply(STATUS_INTERVAL_TOO_SMALL, headers=[("Min-SE", str(exc.min_se))])
            return
        except SessionTimerError as exc:
            tx.reply(400, exc.reason)
            return
        self._incoming[tx] = call

        tx.on_terminated = self._forget_incoming
        self.listener.on_invite(call)

    def _forget_incoming(self, tx: Transaction) -> None:
        self._incoming.pop(tx, None)

    def on_ack(self, ack: SipRequest, flow: Flow) -> None:
        session = self._session_for(ack, incoming=True)
        if session is not None:
            session.on_ack(ack)

    def on_cancel(self, invite: InviteServerTransaction, cancel: SipRequest) -> None:
        call = self._incoming.get(invite)
        if call is not None:
            call.cancelled.set()

    def on_stray_response(self, response: SipResponse, flow: Flow) -> None:
        try:
            is_invite_2xx = response.cseq.method == "INVITE" and 200 <= response.status < 300
        except SipParseError:
            return
        if is_invite_2xx:
            session = self._session_for(response, incoming=False)
            if session is not None:
                session.on_2xx_retransmission(response)

    # ---------------------------------------------------------------- shutdown

    def close(self) -> None:
        for session in list(self.sessions.values()):
            session.close()


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _contact_user(value: str) -> str | None:
    try:
        uri = NameAddr.parse(value).uri
    except SipParseError:
        return None
    return uri.user if isinstance(uri, SipUri) else None
