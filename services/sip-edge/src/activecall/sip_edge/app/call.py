"""One call at the edge: its record, its media leg, its SIP session, its events.

Every state change is written to the call record and announced on ``call:{id}:events``
(:class:`CallStateChanged`); answering adds :class:`CallAnswered` and the three
:class:`SessionStart` entries; the end closes the leg, finishes the record and emits
:class:`CallEnded`. Ending is idempotent, whoever triggers it (BYE either way, a command, a media
timeout, a failed setup). A call whose media worker is lost or drains moves to a new leg on another
worker with a re-INVITE, or an UPDATE when the peer allows it (:meth:`Call.move_media`). A call
knows its edge only through a :class:`CallContext`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from activecall.bus import REDIS_DOWN, Bus, BusTimeout, Command, as_str, xadd_command
from activecall.contract import SESSION_ROLES, CallState, Direction, EndReason, Role
from activecall.messages import (
    CallAnswered,
    CallEnded,
    CallError,
    CallStateChanged,
    DtmfReceived,
    Hangup,
    MediaMoved,
    Message,
    SessionStart,
    Transfer,
    TransferRequested,
)
from activecall.metrics import BUS_PUBLISHED
from activecall.sip_edge import metrics
from activecall.sip_edge.app.legs import Leg, LegClient, LegError, media_address
from activecall.sip_edge.app.reoffer import media_reoffer, moved_answer
from activecall.sip_edge.app.snapshot import CallSnapshot
from activecall.sip_edge.sip.dialog.session import ENDED, InviteSession, SessionListener
from activecall.sip_edge.sip.dialog.snapshot import capture
from activecall.sip_edge.sip.syntax.message import SipRequest, SipResponse
from activecall.sip_edge.sip.syntax.sdp import (
    Answer,
    SdpError,
    SessionDescription,
    process_answer,
    update_answer,
)
from activecall.sip_edge.sip.syntax.uri import SipUri
from activecall.sip_edge.sip.ua.ua import OutgoingCall
from activecall.store import (
    CallRecord,
    CallStore,
    create_commands,
    finish_commands,
    hset_command,
    scrub_variables,
    transaction,
)

log = logging.getLogger("activecall.sip_edge.app.call")

SAMPLE_RATE = 8000
STATUS_ACCEPTED = 202
# Why a call's media moves: its worker stopped beating, or it drains and asks for its calls to go.
MOVE_LOST = "lost"
MOVE_DRAINING = "draining"


class SetupFailed(Exception):
    """A call that cannot be set up: the status to answer (inbound) or report (outbound)."""

    def __init__(
        self,
        status: int,
        reason: str,
        state: CallState = CallState.FAILED,
        headers: list[tuple[str, str]] | None = None,
        by: str = "edge",
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.state = state
        self.headers = headers or []
        self.by = by


def uri_user(uri: object) -> str:
    """The user part of a SIP URI (a number, usually), else the URI as text."""
    return uri.user if isinstance(uri, SipUri) and uri.user else str(uri)


class Spawn(Protocol):
    def __call__(self, coroutine: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Run ``coroutine`` as a task the edge keeps, logs if it fails, and cancels on shutdown."""
        ...


@dataclass(frozen=True)
class CallContext:
    """What a call needs of its edge: where it records and announces itself, the media legs, a place
    to run its tasks, and whom to tell once it has ended."""

    edge_id: str
    bus: Bus
    store: CallStore
    legs: LegClient
    spawn: Spawn
    on_ended: Callable[[Call], None]


class Call(SessionListener):
    """The edge's view of one call; also the listener of its SIP session."""

    def __init__(
        self,
        context: CallContext,
        call_id: str,
        direction: Direction,
        caller: str,
        callee: str,
        sip_call_id: str,
        variables: dict[str, str],
    ) -> None:
        self.context = context
        self.call_id = call_id
        self.direction = direction
        self.caller = caller
        self.callee = callee
        self.sip_call_id = sip_call_id
        self.variables = variables
        self.playbook = ""
        self.state = CallState.NEW
        self.leg: Leg | None = None
        self.answer: Answer | None = None
        self.offer: SessionDescription | None = None
        self.session: InviteSession | None = None
        self.outgoing: OutgoingCall | None = None
        self.events_cursor = ""
        self.abort = asyncio.Event()
        self.abort_reason = ""
        self.abort_by = ""
        self.ended = asyncio.Event()
        self.transfer_target = ""
        self._ending = False
        self.started = time.monotonic()
        self.legs_opened = 0
        self.moving_to: Leg | None = None  # the new leg while the media moves
        # call:{id}:dialog is written from the answer on, again whenever the dialog changes.
        self._dialog_kept = False
        self._dialog_dirty = False
        self._dialog_saving = False

    def __repr__(self) -> str:
        return f"<Call {self.call_id} {self.direction} {self.state}>"

    @property
    def answered(self) -> bool:
        return self.session is not None and self.state in (CallState.ANSWERED, CallState.TRANSFERRING)

    # ---------------------------------------------------------------- record and events

    async def adopt_queued_record(self) -> None:
        """Start from ``queued`` when the api queued this call (its record says so), so the first
        state change reads ``previous=queued``, continuing the api's own ``queued`` event."""
        bus = self.context.bus
        (state,) = await bus.execute([("HGET", bus.keys.call(self.call_id), "state")])
        if state is not None and as_str(state) == CallState.QUEUED.value:
            self.state = CallState.QUEUED

    async def create_record(self, state: CallState) -> None:
        """Write the call record, add it to ``calls:active`` and announce the state, in one round trip."""
        record = CallRecord(
            call_id=self.call_id,
            direction=self.direction,
            state=state,
            caller=self.caller,
            callee=self.callee,
            edge=self.context.edge_id,
            playbook=self.playbook,
            sip_call_id=self.sip_call_id,
            variables=self.variables,
        )
        previous, self.state = self.state, state
        event = CallStateChanged(call_id=self.call_id, state=state, previous=previous)
        bus = self.context.bus
        commands = create_commands(bus.keys, record)
        commands.append(self._xadd(bus.keys.events(self.call_id), event))
        await bus.execute(commands)

    def _xadd(self, stream: str, message: Message, capped: bool = True) -> Command:
        metrics.child(BUS_PUBLISHED, message.TYPE).inc()
        return xadd_command(stream, message, self.context.bus.settings.events_maxlen if capped else None)

    async def set_state(self, state: CallState, reason: str = "") -> None:
        if state is self.state:
            return
        previous, self.state = self.state, state
        event = CallStateChanged(call_id=self.call_id, state=state, previous=previous, reason=reason)
        await asyncio.gather(
            self.context.store.update(self.call_id, state=state.value),
            self.context.bus.emit(self.call_id, event),
        )

    async def record_sip_call_id(self, sip_call_id: str) -> None:
        self.sip_call_id = sip_call_id
        await self.context.store.update(self.call_id, sip_call_id=sip_call_id)

    async def publish_answered(self) -> None:
        """The answered state, CallAnswered, the three session entries and the record, in one round trip."""
        keys = self.context.bus.keys
        previous, self.state = self.state, CallState.ANSWERED
        events = keys.events(self.call_id)
        variables = scrub_variables(self.variables)
        answered = CallAnswered(
            call_id=self.call_id,
            direction=self.direction,
            caller=self.caller,
            callee=self.callee,
            playbook=self.playbook,
            sample_rate=SAMPLE_RATE,
        )
        fields = {"state": CallState.ANSWERED.value, "answered": str(time.time()), "playbook": self.playbook}
        if self.leg is not None:
            fields["media_worker"] = self.leg.worker
        changed = CallStateChanged(call_id=self.call_id, state=CallState.ANSWERED, previous=previous)
        commands = [self._xadd(events, changed), self._xadd(events, answered)]
        for role in SESSION_ROLES:
            # sessions:{role} is never capped: its entries live until their session ends.
            commands.append(
                self._xadd(keys.sessions(role), self._session_start(role, variables), capped=False)
            )
        commands.append(hset_command(keys.call(self.call_id), fields))
        commands += self.dialog_commands()
        results = await self.context.bus.execute(commands)
        self.events_cursor = as_str(results[1])
        metrics.child(metrics.CALL_SETUP, self.direction).observe(time.monotonic() - self.started)

    def _session_start(self, role: str, variables: dict[str, str]) -> SessionStart:
        return SessionStart(
            call_id=self.call_id,
            role=role,
            playbook=self.playbook,
            sample_rate=SAMPLE_RATE,
            variables=variables,
        )

    # ---------------------------------------------------------------- the dialog in Redis

    def snapshot(self) -> CallSnapshot | None:
        """The dialog, leg and negotiated media another edge needs to go on with the call."""
        if self.session is None or self.leg is None or self.answer is None:
            return None
        return CallSnapshot(capture(self.session), self.leg, self.answer)

    def dialog_commands(self) -> list[Command]:
        """Write the snapshot and the SIP Call-ID lookup; nothing before the call is answered."""
        snapshot = self.snapshot()
        if snapshot is None:
            return []
        self._dialog_kept = True
        keys = self.context.bus.keys
        commands: list[Command] = [("SET", keys.dialog(self.call_id), snapshot.to_json())]
        if snapshot.dialog.call_id != self.call_id:
            lookup = keys.sip_call(snapshot.dialog.call_id)
            commands.append(("SET", lookup, self.call_id, "EX", self.context.bus.settings.ended_retention))
        return commands

    def on_dialog_changed(self, session: InviteSession) -> None:
        if not self._dialog_kept or self._ending:
            return
        self._dialog_dirty = True
        if not self._dialog_saving:
            self._dialog_saving = True
            self.context.spawn(self._save_dialog(), f"save-dialog-{self.call_id}")

    async def _save_dialog(self) -> None:
        """Write the dialog until no change is left: changes made meanwhile go in the next write.
        Nothing is written once the call ends (its end deletes the key in the same round trip)."""
        try:
            while self._dialog_dirty and not self._ending:
                self._dialog_dirty = False
                try:
                    await self.context.bus.execute(self.dialog_commands())
                except REDIS_DOWN as exc:
                    log.warning(
                        "could not save the dialog", extra={"call_id": self.call_id, "error": str(exc)}
                    )
                    return
        finally:
            self._dialog_saving = False

    def take_over(
        self, state: CallState, session: InviteSession, snapshot: CallSnapshot, events_cursor: str
    ) -> None:
        """Go on with an answered call another edge set up, from its snapshot: the session, the leg
        on its media worker and the negotiated media, as if this edge had answered it."""
        self.state = state
        self.session = session
        self.leg = snapshot.leg
        self.answer = snapshot.answer
        self.events_cursor = events_cursor
        _, _, number = snapshot.leg.leg_id.rpartition(".")
        self.legs_opened = int(number) if number.isdigit() else 1
        self._dialog_kept = True
        self.on_dialog_changed(session)  # the dialog now names our Contact

    async def refresh_target(self) -> None:
        """Tell the peer that this edge holds the dialog now (RFC 3261 section 12.2, a target
        refresh): an UPDATE without a body when the peer allows UPDATE (RFC 3311), else a re-INVITE
        with our last description unchanged (RFC 3264 section 8: same version), sent once no INVITE
        transaction is open and again after a 491. A 481 or 408 means the dialog is gone."""
        session = self.session
        if session is None or self._ending:
            return
        try:
            if "UPDATE" in session.peer_allow:
                response: SipResponse | None = await session.request("UPDATE")
            else:
                response = await session.reoffer(session.local_sdp)
        except Exception as exc:
            log.warning("target refresh failed", extra={"call_id": self.call_id, "error": str(exc)})
            return
        if response is None or 200 <= response.status < 300:
            return
        log.warning(
            "target refresh refused",
            extra={"call_id": self.call_id, "status": response.status, "reason": response.reason},
        )
        if response.status in (408, 481):
            self.hangup(f"target refresh answered {response.status}", "remote")

    def release(self) -> None:
        """Let another edge go on with the call (it adopted it): forget the session without a BYE and
        leave the record, the leg and the dialog to the new holder."""
        if self._ending:
            return
        self._ending = True
        session = self.session
        if session is not None:
            session.listener = ENDED
            session.close()
        self.context.on_ended(self)
        self.ended.set()
        log.info("call left to another edge", extra={"call_id": self.call_id})

    async def emit(self, *messages: Any) -> None:
        bus = self.context.bus
        await bus.publish_many([(bus.keys.events(self.call_id), m) for m in messages])

    # ---------------------------------------------------------------- ending

    async def finish(self, reason: str, by: str, status: int = 0, state: CallState = CallState.ENDED) -> None:
        """Close the leg, finish the record, emit the end; safe to call more than once."""
        if self._ending:
            return
        self._ending = True
        result = "answered" if self.session is not None else state.value
        if self.session is not None and not self.session.terminated.is_set():
            await self.session.bye(reason)
        try:
            keys = self.context.bus.keys
            previous, self.state = self.state, state
            # The record is ended before CallEnded is out, all in one round trip.
            settings = self.context.bus.settings
            commands = transaction(finish_commands(settings, keys, self.call_id, reason, state.value))
            if self._dialog_kept and self.sip_call_id and self.sip_call_id != self.call_id:
                commands.append(("DEL", keys.sip_call(self.sip_call_id)))
            for leg in (self.leg, self.moving_to):
                if leg is not None:
                    stream, close = self.context.legs.close_command(self.call_id, leg)
                    commands.append(self._xadd(stream, close))
            change = CallStateChanged(call_id=self.call_id, state=state, previous=previous, reason=reason)
            ended = CallEnded(call_id=self.call_id, reason=reason, by=by, status=status)
            commands += [
                self._xadd(keys.events(self.call_id), change),
                self._xadd(keys.events(self.call_id), ended),
            ]
            await self.context.bus.execute(commands)
        except Exception:
            log.exception("could not record the end of a call", extra={"call_id": self.call_id})
        finally:
            metrics.child(metrics.CALLS, self.direction, result).inc()
            self.context.on_ended(self)
            self.ended.set()
            log.info(
                "call ended", extra={"call_id": self.call_id, "reason": reason, "by": by, "status": status}
            )

    def obey(self, command: Hangup | Transfer) -> None:
        """A command from ``edge:{edge}:control`` (the llm's or the api's)."""
        if isinstance(command, Hangup):
            self.hangup(command.reason or EndReason.HANGUP, command.by or "api")
        else:
            self.context.spawn(self.transfer(command.target), f"transfer-{self.call_id}")

    def hangup(self, reason: str, by: str) -> None:
        """End the call from our side, in whatever state it is."""
        self.abort_reason, self.abort_by = reason, by
        if self.session is not None:
            self.context.spawn(self.session.bye(reason), f"bye-{self.call_id}")
            return
        self.abort.set()
        if self.outgoing is not None:
            self.outgoing.cancel()

    # ---------------------------------------------------------------- session listener

    async def on_offer(self, session: InviteSession, offer: bytes) -> bytes:
        """A re-INVITE or UPDATE offer (hold, resume, new address): answer it and move the leg."""
        previous = self.answer
        if previous is None or self.leg is None:
            raise SdpError("no negotiated media to update")
        answer = update_answer(previous, SessionDescription.parse(offer))
        await self.context.legs.update(self.call_id, self.leg, answer)
        self.answer = answer
        return bytes(answer.sdp)

    async def on_answer(self, session: InviteSession, answer: bytes) -> None:
        """The peer's answer to the offer in our 2xx to an offer-less re-INVITE."""
        if self.leg is None:
            return
        try:
            outcome = process_answer(
                SessionDescription.parse(session.local_sdp), SessionDescription.parse(answer)
            )
            await self.context.legs.update(self.call_id, self.leg, outcome)
        except (SdpError, LegError) as exc:
            log.warning(
                "cannot use the answer in the ACK", extra={"call_id": self.call_id, "error": str(exc)}
            )

    def on_terminated(self, session: InviteSession, reason: str, by: str) -> None:
        if by == "local" and self.abort_by:
            by = self.abort_by  # who asked for the hangup: the api, the media worker, a timeout
        self.context.spawn(self.finish(reason, by), f"finish-{self.call_id}")

    def on_dtmf(self, session: InviteSession, digit: str, duration_ms: int) -> None:
        event = DtmfReceived(call_id=self.call_id, digit=digit, duration_ms=duration_ms)
        self.context.spawn(self.context.bus.emit(self.call_id, event))

    def on_refer(self, session: InviteSession, refer_to: str, request: SipRequest) -> int:
        event = TransferRequested(call_id=self.call_id, target=refer_to, by="remote")
        self.context.spawn(self.context.bus.emit(self.call_id, event))
        return STATUS_ACCEPTED

    def on_refer_progress(self, session: InviteSession, status: int, final: bool) -> None:
        if not final or self.state is not CallState.TRANSFERRING:
            return
        if status < 300:
            self.context.spawn(self.finish("transferred", "transfer"), f"finish-{self.call_id}")
        else:
            self.context.spawn(self._transfer_failed(f"the transfer target answered {status}"))

    # ---------------------------------------------------------------- moving the media

    async def move_media(
        self, reason: str, heard_until: float, external_ip: str, new_key: bool = True
    ) -> bool:
        """Move the call's audio to a new leg on another worker and offer it to the peer (an UPDATE
        when the peer allows it, else a re-INVITE: :meth:`Session.reoffer`).

        The new leg takes over the call's agent audio from ``heard_until`` (see LegOpen) and sends
        with a key of its own, or with the old leg's unless ``new_key``; the offer
        is our last description with the audio moved (:func:`media_reoffer`), sent once no INVITE
        transaction is open and again after a 491 (RFC 3261 section 14.1). True when the call goes on
        on the new leg: the record's ``media_worker`` names the new worker, ``media.moved`` says so,
        and the old leg is closed. Otherwise a call whose worker is lost ends with BYE and a reason
        saying what failed; a draining worker's call stays where it is (the failover loop tries it again,
        the drain timeout is the last resort) unless the peer already took the new media, which leaves
        only BYE.
        """
        old, session, answer = self.leg, self.session, self.answer
        if old is None or session is None or answer is None or not self.answered or self._ending:
            return False
        if self.moving_to is not None:
            return False
        self.legs_opened = max(self.legs_opened, 1) + 1
        legs = self.context.legs
        try:
            new = self.moving_to = await legs.open(
                self.call_id,
                f"{self.call_id}.{self.legs_opened}",
                answer.srtp,
                exclude=(old.worker,),
                takeover=True,
                heard_until=heard_until if reason == MOVE_LOST else 0.0,
                crypto_key="" if new_key else old.crypto_key,
            )
        except (LegError, BusTimeout, *REDIS_DOWN) as exc:
            return self._move_failed(reason, f"no media worker took the call ({exc})", peer_moved=False)
        address = media_address(new, external_ip)
        offer = media_reoffer(SessionDescription.parse(session.local_sdp), answer, new, address)
        offer_name = "UPDATE" if session.offer_method == "UPDATE" else "re-INVITE"
        response = await session.reoffer(bytes(offer))
        if response is None or self._ending:
            return self._move_failed(reason, "", peer_moved=False)
        if not 200 <= response.status < 300:
            # RFC 3261 section 12.2.1.2: a 481 or 408 to a request within a dialog ends the dialog.
            gone = response.status in (408, 481)
            error = f"{offer_name} answered {response.status} {response.reason}".strip()
            return self._move_failed(reason, error, peer_moved=gone)
        try:
            outcome = process_answer(offer, SessionDescription.parse(response.body))
            await legs.update(self.call_id, new, outcome)
        except (SdpError, LegError, BusTimeout, *REDIS_DOWN) as exc:
            return self._move_failed(
                reason, f"the answer to the {offer_name} is unusable ({exc})", peer_moved=True
            )
        if self._ending:
            return False
        self.leg, self.moving_to = new, None
        self.answer = moved_answer(outcome, answer, offer, new, address)
        await self._announce_move(old, new, reason)
        metrics.child(metrics.MEDIA_MOVES, reason, "moved").inc()
        log.info(
            "media moved",
            extra={"call_id": self.call_id, "from": old.worker, "to": new.worker, "reason": reason},
        )
        return True

    async def _announce_move(self, old: Leg, new: Leg, reason: str) -> None:
        """The record names the new worker before ``media.moved`` is out (the llm sends its commands
        where the record says), and the old leg is closed; one round trip."""
        keys = self.context.bus.keys
        stream, close = self.context.legs.close_command(self.call_id, old)
        moved = MediaMoved(
            call_id=self.call_id,
            from_worker=old.worker,
            to_worker=new.worker,
            leg_id=new.leg_id,
            reason=reason,
        )
        commands = [
            hset_command(keys.call(self.call_id), {"media_worker": new.worker}),
            *self.dialog_commands(),
            self._xadd(keys.events(self.call_id), moved),
            self._xadd(stream, close),
        ]
        try:
            await self.context.bus.execute(commands)
        except REDIS_DOWN as exc:
            log.warning("could not announce a media move", extra={"call_id": self.call_id, "error": str(exc)})

    def _move_failed(self, reason: str, error: str, *, peer_moved: bool) -> bool:
        """Close the new leg; end the call unless its old leg still carries the media."""
        new, self.moving_to = self.moving_to, None
        if new is not None:
            stream, close = self.context.legs.close_command(self.call_id, new)
            self.context.spawn(self.context.bus.publish(stream, close), f"close-leg-{self.call_id}")
        if self._ending or not error:
            return False
        keep_old = reason == MOVE_DRAINING and not peer_moved
        metrics.child(metrics.MEDIA_MOVES, reason, "kept" if keep_old else "ended").inc()
        log.warning(
            "media move failed",
            extra={"call_id": self.call_id, "reason": reason, "error": error, "kept": keep_old},
        )
        if not keep_old:
            self.hangup(f"media worker {reason}: {error}", "media")
        return False

    # ---------------------------------------------------------------- transfer

    async def transfer(self, target: str) -> None:
        """Blind transfer with REFER (RFC 3515); BYE follows the final NOTIFY."""
        session = self.session
        if session is None or not self.answered:
            await self.emit(
                CallError(call_id=self.call_id, source=Role.SIP_EDGE, error="transfer: call not answered")
            )
            return
        uri = target if ":" in target else f"tel:{target}"
        self.transfer_target = uri
        await self.set_state(CallState.TRANSFERRING, reason=uri)
        response = await session.refer(uri)
        if response.status >= 300:
            await self._transfer_failed(f"REFER answered {response.status}")

    async def _transfer_failed(self, error: str) -> None:
        await self.emit(
            CallError(call_id=self.call_id, source=Role.SIP_EDGE, error=f"transfer failed: {error}")
        )
        if self.state is CallState.TRANSFERRING:
            await self.set_state(CallState.ANSWERED, reason="transfer failed")
