"""An established INVITE dialog: what happens inside it, in both directions.

In: BYE, re-INVITE and UPDATE (offer/answer through the listener, 491/500 on glare), OPTIONS (200 with
Allow/Accept), INFO carrying DTMF, NOTIFY (answered 200; REFER progress reported), REFER (the listener
decides). Out: BYE, re-INVITE (a new offer waits for the INVITE transactions in progress and is sent
again after a 491), UPDATE, REFER, any request; 2xx ACKs and their retransmissions. The UAS retransmits
its 2xx until the ACK (RFC 3261 section 13.3.1.4) and ends a session whose ACK never comes. Session
timers (RFC 4028) run when the peer asked for them.

A session knows its user agent only as a :class:`SessionSender` and tells it of its end through
``on_close``; once ended it lets go of its listener, so nothing of the application outlives it here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from activecall.sip_edge import metrics
from activecall.sip_edge.sip.dialog.capabilities import (
    ALLOW,
    CONTENT_DTMF,
    CONTENT_DTMF_RELAY,
    CONTENT_SDP,
    CONTENT_SIPFRAG,
    SUPPORTED,
    allow_headers,
    capability_headers,
)
from activecall.sip_edge.sip.dialog.dialog import Dialog
from activecall.sip_edge.sip.dialog.session_timer import (
    REFRESHER_UAC,
    REFRESHER_UAS,
    STATUS_INTERVAL_TOO_SMALL,
    IntervalTooBrief,
    SessionExpires,
    SessionTimerError,
    expiry_delay,
    negotiate_uas,
    parse_min_se,
    refresh_delay,
    session_expires,
)
from activecall.sip_edge.sip.syntax.message import SipRequest, SipResponse, make_response
from activecall.sip_edge.sip.syntax.sdp import WARN_MISCELLANEOUS, NegotiationError, SdpError
from activecall.sip_edge.sip.syntax.uri import NameAddr, SipParseError
from activecall.sip_edge.sip.transaction.timers import BaseIntervals, Cancellable, Scheduler
from activecall.sip_edge.sip.transport.transport import Destination, Flow, TransportLayer

if TYPE_CHECKING:
    from activecall.sip_edge.sip.syntax.digest import DigestClient
    from activecall.sip_edge.sip.transaction.transaction import ServerTransaction

log = logging.getLogger("activecall.sip_edge.sip.dialog.session")

DTMF_DIGITS = frozenset("0123456789*#ABCD")
# RFC 3261 section 14.2: a UAS receiving a re-INVITE while its own is pending waits 0-10 s.
RETRY_AFTER_MAX = 10
# RFC 3261 section 14.1: after a 491 the owner of the Call-ID waits 2.1-4 s, the other side 0-2 s.
GLARE_WAIT_OWNER = (2.1, 4.0)
GLARE_WAIT_OTHER = (0.0, 2.0)
REOFFER_ATTEMPTS = 3
DEFAULT_DTMF_MS = 160

HeaderItems = Iterable[tuple[str, str]]


class SessionSender(Protocol):
    """What a session needs of its user agent: the clock, the session interval it accepts, and the way
    to send within the dialog (RFC 3261 section 12.2)."""

    @property
    def intervals(self) -> BaseIntervals: ...

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def transport(self) -> TransportLayer: ...

    @property
    def min_se(self) -> int: ...

    async def dialog_destination(self, session: InviteSession) -> Destination: ...

    def stamp_via(self, request: SipRequest, dest: Destination) -> None: ...

    async def send_in_dialog(
        self, session: InviteSession, request: SipRequest
    ) -> tuple[SipResponse, SipRequest]: ...


class SessionListener:
    """What the application hears from a session until it ends. The defaults refuse offers and
    transfers."""

    async def on_offer(self, session: InviteSession, offer: bytes) -> bytes:
        """Answer a re-offer (re-INVITE or UPDATE); raise NegotiationError to answer 488."""
        raise NegotiationError(399, "re-offers are not accepted", "edge")

    async def on_answer(self, session: InviteSession, answer: bytes) -> None:
        """The peer's answer to our offer (in an ACK or a 2xx)."""

    def on_terminated(self, session: InviteSession, reason: str, by: str) -> None:
        """The session ended; ``by`` is "remote" or "local"."""

    def on_dtmf(self, session: InviteSession, digit: str, duration_ms: int) -> None:
        """A DTMF digit arrived in an INFO request."""

    def on_refer(self, session: InviteSession, refer_to: str, request: SipRequest) -> int:
        """A REFER arrived; return the status to answer (202 accepts)."""
        return 603

    def on_refer_progress(self, session: InviteSession, status: int, final: bool) -> None:
        """A NOTIFY about our REFER: the sipfrag status, and whether the subscription ended."""

    def on_dialog_changed(self, session: InviteSession) -> None:
        """A CSeq, the remote target or a session description changed (see ``snapshot.capture``)."""


# The listener of a session that has ended: whatever still reaches it is refused or ignored.
ENDED = SessionListener()


def parse_dtmf_relay(body: bytes) -> tuple[str, int] | None:
    """``Signal=5`` / ``Duration=160`` lines of application/dtmf-relay."""
    digit, duration = "", DEFAULT_DTMF_MS
    for line in body.decode("utf-8", "replace").splitlines():
        name, _, value = line.partition("=")
        name, value = name.strip().lower(), value.strip()
        if name == "signal":
            digit = value.upper()
        elif name == "duration" and value.isdigit():
            duration = int(value)
    return (digit, duration) if digit in DTMF_DIGITS and len(digit) == 1 else None


def parse_sipfrag_status(body: bytes) -> int | None:
    """Status code of the status line in a message/sipfrag body (RFC 3420), e.g. ``SIP/2.0 200 OK``."""
    line = body.decode("utf-8", "replace").lstrip().split("\r\n", 1)[0].split("\n", 1)[0]
    parts = line.split(" ")
    if len(parts) >= 2 and parts[0].upper().startswith("SIP/") and parts[1].isdigit() and len(parts[1]) == 3:
        return int(parts[1])
    return None


class _Retransmitter:
    """Sends a 2xx again at T1, 2T1, 4T1, ... capped at T2, until stopped; after 64*T1 without an ACK
    it tells the session (RFC 3261 section 13.3.1.4)."""

    def __init__(self, session: InviteSession, response: SipResponse, flow: Flow) -> None:
        self.session = session
        self.response = response
        self.data = bytes(response)
        self.flow = flow
        timers = session.sender.intervals
        self.interval = timers.t1
        self.t2 = timers.t2
        self.lifetime = 64 * timers.t1
        self.elapsed = 0.0
        self.handle: Cancellable | None = None
        self._schedule()

    def _schedule(self) -> None:
        self.handle = self.session.sender.scheduler.call_later(self.interval, self._fire)

    def _fire(self) -> None:
        self.elapsed += self.interval
        if self.elapsed >= self.lifetime - 1e-9:
            self.handle = None
            self.session._ack_timeout(self)
            return
        metrics.RETRANSMISSIONS.labels("2xx").inc()
        with contextlib.suppress(Exception):
            self.session.sender.transport.send_bytes(self.data, self.response, self.flow)
        self.interval = min(self.interval * 2, self.t2, self.lifetime - self.elapsed)
        self._schedule()

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class InviteSession:
    """One call's dialog after the 2xx (or after our 2xx, before the ACK)."""

    def __init__(
        self,
        sender: SessionSender,
        dialog: Dialog,
        invite: SipRequest,
        flow: Flow | None,
        listener: SessionListener,
        local_sdp: bytes = b"",
        remote_sdp: bytes = b"",
        *,
        on_close: Callable[[InviteSession], None],
    ) -> None:
        self.sender = sender
        self._on_close = on_close
        self.dialog = dialog
        self.invite = invite
        self.flow = flow
        self.listener = listener
        self.local_sdp = local_sdp
        self.remote_sdp = remote_sdp
        self.credentials: DigestClient | None = None
        self.peer_allow: frozenset[str] = frozenset()
        self.terminated = asyncio.Event()
        self.acked = asyncio.Event()
        self.end_reason = ""
        self.timer: SessionExpires | None = None
        self._timer_handle: Cancellable | None = None
        self._retransmitter: _Retransmitter | None = None
        self._answer_in_ack = False
        self._peer_invite_idle = asyncio.Event()  # no re-INVITE of the peer in progress
        self._peer_invite_idle.set()
        self._last_ack: tuple[SipRequest, Destination] | None = None
        self._invite_lock = asyncio.Lock()  # held while an offer of ours (re-INVITE or UPDATE) is open
        self._tasks: set[asyncio.Task[Any]] = set()
        if dialog.is_uac:
            self.acked.set()

    def __repr__(self) -> str:
        return f"<InviteSession {self.dialog.call_id} {'uac' if self.dialog.is_uac else 'uas'}>"

    @property
    def call_id(self) -> str:
        return self.dialog.call_id

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str = "") -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name or f"sip-session-{self.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("session task failed", exc_info=task.exception(), extra={"call_id": self.call_id})

    # ---------------------------------------------------------------- ending

    def _terminate(self, reason: str, by: str) -> None:
        if self.terminated.is_set():
            return
        self.end_reason = reason
        self.terminated.set()
        self.acked.set()
        self._peer_invite_idle.set()
        self._cancel_timer()
        if self._retransmitter is not None:
            self._retransmitter.stop()
        self._on_close(self)
        # The session lingers in the transaction layer a while (RFC 3261 timers): let go of the
        # application, so the call does not wait for a garbage collection in a cycle with its session.
        listener, self.listener = self.listener, ENDED
        try:
            listener.on_terminated(self, reason, by)
        except Exception:
            log.exception("session listener failed", extra={"call_id": self.call_id})

    async def bye(self, reason: str = "hangup") -> None:
        """End the session with BYE (RFC 3261 section 15.1.1); the session ends whatever the answer.
        A UAS waits for the ACK of its 2xx first (section 15)."""
        if self.terminated.is_set():
            return
        if not self.acked.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.acked.wait(), 64 * self.sender.intervals.t1)
        if self.terminated.is_set():
            return
        try:
            await self.request("BYE")
        except Exception as exc:
            log.info("BYE failed", extra={"call_id": self.call_id, "error": str(exc)})
        self._terminate(reason, "local")

    def close(self) -> None:
        """Forget the session without signalling (shutdown)."""
        self._terminate("shutdown", "local")
        for task in list(self._tasks):
            task.cancel()

    def _ack_timeout(self, retransmitter: _Retransmitter) -> None:
        if retransmitter is not self._retransmitter:
            return
        self._retransmitter = None
        log.info("no ACK for our 2xx; ending the session", extra={"call_id": self.call_id})
        self.acked.set()
        self.spawn(self.bye("no ACK"))

    # ---------------------------------------------------------------- 2xx and ACK

    def send_2xx(self, tx: ServerTransaction, response: SipResponse, answer_in_ack: bool = False) -> None:
        """Send our 2xx and retransmit it until the ACK."""
        self.acked.clear()
        self._answer_in_ack = answer_in_ack
        tx.respond(response)
        if self._retransmitter is not None:
            self._retransmitter.stop()
        self._retransmitter = _Retransmitter(self, response, tx.flow)

    def on_ack(self, ack: SipRequest) -> None:
        retransmitter = self._retransmitter
        if retransmitter is None or ack.cseq.number != retransmitter.response.cseq.number:
            return
        retransmitter.stop()
        self._retransmitter = None
        self._peer_invite_idle.set()
        self.acked.set()
        if self._answer_in_ack and ack.body:
            self._answer_in_ack = False
            self.remote_sdp = ack.body
            self.listener.on_dialog_changed(self)
            self.spawn(self.listener.on_answer(self, ack.body))

    def on_2xx_retransmission(self, response: SipResponse) -> None:
        """The peer did not get our ACK: send it again (RFC 3261 section 13.2.2.4)."""
        if self._last_ack is not None and response.cseq.number == self._last_ack[0].cseq.number:
            ack, dest = self._last_ack
            with contextlib.suppress(Exception):
                self.sender.transport.send(ack, dest)

    async def send_ack(self, invite: SipRequest) -> None:
        ack = self.dialog.create_ack(invite)
        dest = await self.sender.dialog_destination(self)
        self.sender.stamp_via(ack, dest)
        self._last_ack = (ack, dest)
        self.sender.transport.send(ack, dest)

    # ---------------------------------------------------------------- requests we send

    async def request(
        self, method: str, headers: HeaderItems = (), body: bytes = b"", content_type: str | None = None
    ) -> SipResponse:
        """Send an in-dialog request and return its final response (after a digest retry)."""
        response, _ = await self._request(method, headers, body, content_type)
        return response

    async def _request(
        self, method: str, headers: HeaderItems, body: bytes, content_type: str | None
    ) -> tuple[SipResponse, SipRequest]:
        request = self.dialog.create_request(method)
        self.listener.on_dialog_changed(self)
        for name, value in headers:
            request.headers.add(name, value)
        if body:
            request.headers.add("Content-Type", content_type or CONTENT_SDP)
            request.body = body
        return await self.sender.send_in_dialog(self, request)

    async def reinvite(self, body: bytes, headers: HeaderItems = ()) -> SipResponse:
        """A re-INVITE offering ``body``; a 2xx is ACKed and its answer kept (RFC 3261 section 14.1)."""
        return await self._offer("INVITE", body, headers)

    @property
    def offer_method(self) -> str:
        """How :meth:`reoffer` sends a new offer: UPDATE when the peer allows it, else INVITE."""
        return "UPDATE" if "UPDATE" in self.peer_allow else "INVITE"

    async def update(self, body: bytes) -> SipResponse:
        """An UPDATE offering ``body`` (RFC 3311 section 5.1); a 2xx's answer is kept. No ACK: the
        offer and its answer are done in one transaction."""
        return await self._offer("UPDATE", body)

    async def _offer(self, method: str, body: bytes, headers: HeaderItems = ()) -> SipResponse:
        """Send an offer in ``method``; on a 2xx (ACKed if an INVITE's) take the peer's target (both
        are target refreshes) and its answer."""
        async with self._invite_lock:
            extra = [("Allow", ALLOW), ("Supported", SUPPORTED), *headers]
            response, sent = await self._request(method, extra, body, CONTENT_SDP)
            if 200 <= response.status < 300:
                self.dialog.refresh_target(response)
                if method == "INVITE":
                    await self.send_ack(sent)
                self.local_sdp = body
                self.remote_sdp = response.body or self.remote_sdp
                self.listener.on_dialog_changed(self)
            return response

    async def reoffer(self, body: bytes, attempts: int = REOFFER_ATTEMPTS) -> SipResponse | None:
        """Offer new media, None if the session ended first: in an UPDATE when the peer allows it
        (RFC 3311; one round trip, no ACK), else in a re-INVITE (RFC 3261 section 14.1).

        Neither may start while an offer of either side is unanswered (RFC 3311 section 5.1; RFC 3261
        section 14.1 for INVITE transactions), so this waits for the ACK of any 2xx we sent and for a
        re-INVITE of the peer to finish. A 491 (both sides offered at once) is tried again after RFC
        3261 section 14.1's random wait, which RFC 3311 section 5.2 takes over: 2.1-4 s when we placed
        the call (we own the Call-ID), else 0-2 s; at most ``attempts`` sends in all. The last final
        response is returned: a 2xx's answer is kept in ``remote_sdp`` (a re-INVITE's 2xx is ACKed);
        after any other the session's media is unchanged (a 481 or 408 means the dialog is gone).
        """
        response: SipResponse | None = None
        for attempt in range(attempts):
            if attempt:
                low, high = GLARE_WAIT_OWNER if self.dialog.is_uac else GLARE_WAIT_OTHER
                await asyncio.sleep(random.uniform(low, high))
            await self._invite_idle()
            if self.terminated.is_set():
                return None
            response = await (self.update(body) if self.offer_method == "UPDATE" else self.reinvite(body))
            if response.status != 491:
                return response
        return response

    async def _invite_idle(self) -> None:
        """Return once no INVITE transaction of the peer is open (its ACK came, or it failed), at most
        64*T1 later: a peer that never ACKs is ended by the 2xx retransmitter anyway."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(64 * self.sender.intervals.t1):
                while not (self.acked.is_set() and self._peer_invite_idle.is_set()):
                    await self.acked.wait()
                    await self._peer_invite_idle.wait()

    async def refer(self, target: str) -> SipResponse:
        """Ask the peer to call ``target`` (RFC 3515); progress comes as NOTIFYs to the listener."""
        referred_by = str(NameAddr(self.dialog.local_uri.uri))
        return await self.request("REFER", [("Refer-To", f"<{target}>"), ("Referred-By", referred_by)])

    # ---------------------------------------------------------------- requests we receive

    def on_request(self, request: SipRequest, tx: ServerTransaction) -> None:
        tx.to_tag = self.dialog.local_tag
        if self.terminated.is_set():
            tx.reply(481)
            return
        if not self.dialog.accept_request(request):
            tx.reply(500, "Out Of Order CSeq")
            return
        if request.method not in ("ACK", "BYE"):
            self.listener.on_dialog_changed(self)
        handler = getattr(self, f"_on_{request.method.lower()}", None)
        if handler is None:
            tx.reply(405, headers=allow_headers())
            return
        handler(request, tx)

    def _on_bye(self, request: SipRequest, tx: ServerTransaction) -> None:
        tx.reply(200)
        self._terminate("remote hangup", "remote")

    def _on_options(self, request: SipRequest, tx: ServerTransaction) -> None:
        tx.reply(200, headers=capability_headers())

    def _on_prack(self, request: SipRequest, tx: ServerTransaction) -> None:
        tx.reply(481)  # we never send reliable provisional responses

    def _on_info(self, request: SipRequest, tx: ServerTransaction) -> None:
        tx.reply(200)
        content_type = request.content_type
        found: tuple[str, int] | None = None
        if content_type == CONTENT_DTMF_RELAY:
            found = parse_dtmf_relay(request.body)
        elif content_type == CONTENT_DTMF:
            digit = request.body.decode("utf-8", "replace").strip().upper()
            found = (digit, DEFAULT_DTMF_MS) if len(digit) == 1 and digit in DTMF_DIGITS else None
        if found is not None:
            self.listener.on_dtmf(self, *found)

    def _on_notify(self, request: SipRequest, tx: ServerTransaction) -> None:
        tx.reply(200)
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "refer":
            return
        status = parse_sipfrag_status(request.body)
        state = (request.headers.get("Subscription-State") or "").split(";")[0].strip().lower()
        if status is not None:
            self.listener.on_refer_progress(self, status, state == "terminated")

    def _on_refer(self, request: SipRequest, tx: ServerTransaction) -> None:
        refer_to = request.headers.get("Refer-To")
        try:
            target = str(NameAddr.parse(refer_to).uri) if refer_to else ""
        except SipParseError:
            target = ""
        if not target:
            tx.reply(400, "Missing Refer-To")
            return
        status = self.listener.on_refer(self, target, request)
        tx.reply(status)
        if 200 <= status < 300:
            # The implicit subscription ends at once: the transfer is left to the application.
            body = b"SIP/2.0 100 Trying\r\n"
            headers = [("Event", "refer"), ("Subscription-State", "terminated;reason=noresource")]
            self.spawn(self.request("NOTIFY", headers, body, f"{CONTENT_SIPFRAG};version=2.0"))

    def _on_invite(self, request: SipRequest, tx: ServerTransaction) -> None:
        if self._invite_lock.locked():
            tx.reply(491)
            return
        if not self._peer_invite_idle.is_set():
            tx.reply(500, headers=[("Retry-After", str(random.randint(0, RETRY_AFTER_MAX)))])
            return
        self._peer_invite_idle.clear()
        self.dialog.refresh_target(request)
        self.spawn(self._answer_offer(request, tx))

    def _on_update(self, request: SipRequest, tx: ServerTransaction) -> None:
        if self._invite_lock.locked() and request.body:
            tx.reply(491)
            return
        self.dialog.refresh_target(request)
        self.spawn(self._answer_offer(request, tx))

    async def _answer_offer(self, request: SipRequest, tx: ServerTransaction) -> None:
        """Answer a re-INVITE or UPDATE: offer/answer through the listener, session timer refresh."""
        is_invite = request.method == "INVITE"
        try:
            timer = negotiate_uas(request, self.sender.min_se)
            answer = await self._offer_answer(request)
        except IntervalTooBrief as exc:
            self._peer_invite_idle.set()
            tx.reply(STATUS_INTERVAL_TOO_SMALL, headers=[("Min-SE", str(exc.min_se))])
            return
        except NegotiationError as exc:
            self._peer_invite_idle.set()
            tx.reply(488, headers=[("Warning", exc.warning)])
            return
        except (SessionTimerError, SipParseError) as exc:
            self._peer_invite_idle.set()
            tx.reply(400, exc.reason)
            return
        except SdpError as exc:
            self._peer_invite_idle.set()
            warning = NegotiationError(WARN_MISCELLANEOUS, str(exc)[:100], "edge").warning
            tx.reply(488, headers=[("Warning", warning)])
            return
        except Exception:
            log.exception("cannot answer a re-offer", extra={"call_id": self.call_id})
            self._peer_invite_idle.set()
            tx.reply(500)
            return
        response = self._ok(request, answer if (is_invite or request.body) else b"", timer)
        if is_invite:
            self.send_2xx(tx, response, answer_in_ack=not request.body)
        else:
            tx.respond(response)
        if timer is not None:
            self.start_timer(timer, REFRESHER_UAS)
        elif is_invite or request.headers.get("Session-Expires") is None:
            self._cancel_timer()  # RFC 4028 section 9: a refresh without Session-Expires turns it off

    async def _offer_answer(self, request: SipRequest) -> bytes:
        if not request.body:
            return self.local_sdp  # an offer-less re-INVITE: our offer goes in the 2xx
        answer = await self.listener.on_offer(self, request.body)
        self.remote_sdp, self.local_sdp = request.body, answer
        self.listener.on_dialog_changed(self)
        return answer

    def _ok(self, request: SipRequest, body: bytes, timer: SessionExpires | None) -> SipResponse:
        response = make_response(request, 200, to_tag=self.dialog.local_tag)
        headers = response.headers
        headers.add("Contact", str(self.dialog.local_contact))
        for name, value in capability_headers():
            headers.add(name, value)
        if timer is not None:
            headers.add("Session-Expires", str(timer))
            headers.add("Require", "timer")
        if body:
            headers.add("Content-Type", CONTENT_SDP)
            response.body = body
        return response

    # ---------------------------------------------------------------- session timers (RFC 4028)

    def start_timer(self, timer: SessionExpires, role: str) -> None:
        """Run the session timer negotiated by a transaction in which we were ``role``."""
        self._cancel_timer()
        self.timer = timer
        if timer.refresher == role:
            delay, callback = refresh_delay(timer.interval), self._refresh_due
        else:
            delay, callback = expiry_delay(timer.interval), self._expired
        self._timer_handle = self.sender.scheduler.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None

    def _refresh_due(self) -> None:
        self._timer_handle = None
        self.spawn(self._refresh())

    def _expired(self) -> None:
        self._timer_handle = None
        log.info("session timer expired", extra={"call_id": self.call_id})
        self.spawn(self.bye("session expired"))

    async def _refresh(self, interval: int | None = None) -> None:
        """Refresh as the refresher: UPDATE when the peer allows it, else a re-INVITE with our last
        offer unchanged (RFC 4028 section 7.4)."""
        if self.terminated.is_set() or self.timer is None:
            return
        asked = SessionExpires(interval or self.timer.interval, REFRESHER_UAC)
        headers = [("Session-Expires", str(asked)), ("Supported", "timer")]
        if "UPDATE" in self.peer_allow:
            response = await self.request("UPDATE", headers)
        else:
            response = await self.reinvite(self.local_sdp, headers)
        if 200 <= response.status < 300:
            granted = session_expires(response) or asked
            self.start_timer(
                SessionExpires(granted.interval, granted.refresher or REFRESHER_UAC), REFRESHER_UAC
            )
        elif response.status == STATUS_INTERVAL_TOO_SMALL and interval is None:
            try:
                minimum = parse_min_se(response.headers.get("Min-SE") or "")
            except SessionTimerError:
                minimum = 0
            if minimum > asked.interval:
                await self._refresh(minimum)
                return
            await self.bye("session refresh failed")
        elif response.status == 491:
            self._timer_handle = self.sender.scheduler.call_later(random.uniform(2.1, 4.0), self._refresh_due)
        else:
            await self.bye("session refresh failed")
