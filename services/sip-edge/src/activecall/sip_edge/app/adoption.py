"""Calls outlive their SIP edge: a live edge adopts the answered calls of an edge that died or drains.

The edge holding a call keeps its dialog, leg and negotiated media in ``call:{id}:dialog``
(:mod:`activecall.sip_edge.app.snapshot`), and ``sip-call:{Call-ID}`` names the call of a SIP
Call-ID. A call is an **orphan** when it is answered (or transferring) and its record's ``edge`` has
no live beat in ``workers:sip-edge``, beats ``draining``, or is this very edge without the call in its
table (it restarted under the same id). A live edge that is not draining adopts an orphan:

- every ``sweep_s`` from ``calls:active``, so commands for the call (``edge:{edge}:control``) and its
  media events reach an edge before the caller does anything;
- at once when a request of its dialog arrives here (the peer's BYE, re-INVITE, UPDATE, INFO,
  OPTIONS), whatever the record's edge: the peer sends the dialog's requests to this edge's address
  (a restart on the same address, or a target refresh of ours), so this edge is where the call is
  held from now on. An edge still holding it lets go of it on its next sweep.

The claim is a transaction watching the record that sets ``edge`` to this edge, so two edges never
both adopt a call. The adopter rebuilds the session (our Contact from now on, requests sent where the
dialog says, over a new connection for TCP and TLS) and the call on its existing leg; a Hangup the dead
edge received but did not act on (``edge:{old}:control`` since ``COMMAND_LOOKBACK_S`` before the
adoption) is acted on. When the adopting edge is reached at another address than the old one, it
sends the peer a target refresh (RFC 3261 section 12.2: a re-INVITE with our last description
unchanged, or an UPDATE without a body when the peer allows UPDATE), so the peer's next requests come
here. Every sweep also looks at this edge's own calls: one whose record names another edge was
adopted (this edge drains, was thought dead, or the peer turned to another edge), and is let go
without a BYE.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final

from redis.exceptions import WatchError

from activecall.bus import REDIS_DOWN, Bus, as_str
from activecall.bus import now_ms as bus_now_ms
from activecall.contract import CallState, Direction, Role
from activecall.messages import Hangup
from activecall.registry import list_workers
from activecall.sip_edge import metrics
from activecall.sip_edge.app.call import Call, Spawn
from activecall.sip_edge.app.calls import Calls
from activecall.sip_edge.app.snapshot import CallSnapshot
from activecall.sip_edge.sip.dialog.snapshot import SnapshotError
from activecall.sip_edge.sip.syntax.message import SipParseError, SipRequest
from activecall.sip_edge.sip.syntax.uri import NameAddr, SipUri
from activecall.sip_edge.sip.transaction.transaction import ServerTransaction
from activecall.sip_edge.sip.transport.transport import Flow
from activecall.sip_edge.sip.ua.ua import UserAgent
from activecall.store import CallRecord

log = logging.getLogger("activecall.sip_edge.app.adoption")

SWEEP_S: Final = 1.0
COMMAND_LOOKBACK_S: Final = 30.0
# The events a dead edge may not have acted on (a media.timeout) are read again from this far back.
EVENTS_LOOKBACK_MS: Final = 10_000
HELD_STATES: Final = frozenset({CallState.ANSWERED.value, CallState.TRANSFERRING.value})
HOW_REQUEST: Final = "request"
HOW_SWEEP: Final = "sweep"


@dataclass(frozen=True)
class Edges:
    """The sip-edge registry as one read saw it: the live edges, and those of them draining."""

    live: frozenset[str]
    draining: frozenset[str]

    def lets_go(self, edge: str) -> bool:
        """Whether ``edge``'s calls are free to adopt: it is dead or draining."""
        return edge not in self.live or edge in self.draining


class Adoption:
    """Adopts orphaned calls for one edge, and lets go of the calls another edge adopted from it."""

    def __init__(
        self,
        bus: Bus,
        calls: Calls,
        ua: UserAgent,
        spawn: Spawn,
        edge_id: str,
        *,
        heartbeat_ttl: float,
        sweep_s: float = SWEEP_S,
    ) -> None:
        self.bus = bus
        self.calls = calls
        self.ua = ua
        self.spawn = spawn
        self.edge_id = edge_id
        self.heartbeat_ttl = heartbeat_ttl
        self.sweep_s = sweep_s
        self.draining = False
        self.running = True
        self._claims: dict[str, asyncio.Future[Call | None]] = {}

    # ---------------------------------------------------------------- the sweep

    async def run(self) -> None:
        unread = False
        while self.running:
            await asyncio.sleep(self.sweep_s)
            try:
                await self.sweep()
                unread = False
            except REDIS_DOWN as exc:
                if not unread:
                    log.warning("cannot sweep for orphaned calls", extra={"error": str(exc)})
                unread = True
            except Exception:
                log.exception("sweep for orphaned calls failed")

    async def sweep(self) -> list[str]:
        """Let go of the calls others adopted from us, then adopt the orphans; the ids adopted."""
        redis, keys = self.bus.redis, self.bus.keys
        call_ids = sorted(as_str(m) for m in await redis.smembers(keys.calls_active()))
        if not call_ids:
            return []
        pipe = redis.pipeline(transaction=False)
        for call_id in call_ids:
            pipe.hmget(keys.call(call_id), ["state", "edge"])
        records = await pipe.execute()
        orphans: list[str] = []
        edges: Edges | None = None
        for call_id, (state, edge) in zip(call_ids, records, strict=True):
            state, edge = as_str(state or b""), as_str(edge or b"")
            ours = self.calls.get(call_id)
            if ours is not None:
                if edge and edge != self.edge_id and ours.answered:
                    ours.release()
                continue
            if self.draining or state not in HELD_STATES:
                continue
            edges = edges or await self.edges()
            if self._orphaned(edge, edges):
                orphans.append(call_id)
        adopted = []
        for call_id in orphans:
            if await self.adopt(call_id, HOW_SWEEP, edges) is not None:
                adopted.append(call_id)
        return adopted

    async def edges(self) -> Edges:
        workers = await list_workers(self.bus.redis, self.bus.keys, Role.SIP_EDGE, self.heartbeat_ttl)
        live = {w.id for w in workers} | {self.edge_id}  # before our first beat we are alive too
        return Edges(frozenset(live), frozenset(w.id for w in workers if w.draining))

    def _orphaned(self, edge: str, edges: Edges) -> bool:
        if edge == self.edge_id:
            return True  # ours by the record, not in our table: we restarted
        return bool(edge) and edges.lets_go(edge)

    # ---------------------------------------------------------------- a request of a dialog we lack

    def on_request(self, request: SipRequest, tx: ServerTransaction) -> bool:
        """The user agent's handler for a request of an unknown dialog: look for the dialog in Redis
        (the answer follows through ``ua.dispatch``); False when this edge adopts nothing."""
        if self.draining or not self.running:
            return False
        self.spawn(self._adopt_for(request, tx), f"adopt-{request.call_id}")
        return True

    async def _adopt_for(self, request: SipRequest, tx: ServerTransaction) -> None:
        try:
            call_id = await self._call_of(request.call_id)
            if call_id and self.calls.get(call_id) is None:
                flow = tx.flow if tx.flow.transport.reliable else None
                await self.adopt(call_id, HOW_REQUEST, flow=flow)
        except (*REDIS_DOWN, SipParseError) as exc:
            log.warning("cannot look for the dialog", extra={"call_id": request.call_id, "error": str(exc)})
        except Exception:
            log.exception("cannot adopt the dialog", extra={"call_id": request.call_id})
        finally:
            self.ua.dispatch(request, tx)

    async def _call_of(self, sip_call_id: str) -> str:
        """Our call id for a SIP Call-ID: the lookup, else the Call-ID itself when it names a call."""
        keys = self.bus.keys
        found, kept = await self.bus.execute(
            [("GET", keys.sip_call(sip_call_id)), ("EXISTS", keys.dialog(sip_call_id))]
        )
        if found is not None:
            return as_str(found)
        return sip_call_id if kept else ""

    # ---------------------------------------------------------------- adopting one call

    def claiming(self, call_id: str) -> asyncio.Future[Call | None] | None:
        """The adoption of ``call_id`` in progress here, if any: the record may already name this
        edge (so commands come here) before the call is in the table."""
        return self._claims.get(call_id)

    async def adopt(
        self, call_id: str, how: str, edges: Edges | None = None, flow: Flow | None = None
    ) -> Call | None:
        """Claim an orphaned call and go on with it here; None when it is no orphan (or gone)."""
        claim = self._claims.get(call_id)
        if claim is not None:
            return await asyncio.shield(claim)
        future: asyncio.Future[Call | None] = asyncio.get_running_loop().create_future()
        self._claims[call_id] = future
        try:
            if how != HOW_REQUEST:
                edges = edges or await self.edges()
            call = await self._adopt(call_id, how, edges, flow)
            future.set_result(call)
            return call
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: whoever waits on it gets it, nobody else need
            raise
        finally:
            del self._claims[call_id]

    async def _adopt(self, call_id: str, how: str, edges: Edges | None, flow: Flow | None) -> Call | None:
        if self.calls.get(call_id) is not None:
            return self.calls.get(call_id)
        claimed = await self._claim(call_id, edges)
        if claimed is None:
            return None
        record, snapshot = claimed
        call = self.calls.open(
            Direction(record.direction),
            record.caller,
            record.callee,
            record.variables,
            call_id=call_id,
            sip_call_id=record.sip_call_id or snapshot.dialog.call_id,
        )
        call.playbook = record.playbook
        session = self.ua.restore_session(snapshot.dialog, call, flow)
        cursor = f"{max(0, bus_now_ms() - EVENTS_LOOKBACK_MS)}-0"
        call.take_over(CallState(record.state), session, snapshot, cursor)
        metrics.child(metrics.CALLS_ADOPTED, how).inc()
        log.info(
            "call adopted",
            extra={
                "call_id": call_id,
                "from": record.edge,
                "how": how,
                "sip_call_id": snapshot.dialog.call_id,
            },
        )
        await self._pending_hangup(call, record.edge)
        if _moved(snapshot.dialog.local_contact, str(session.dialog.local_contact)):
            self.spawn(call.refresh_target(), f"refresh-target-{call_id}")
        return call

    async def _claim(self, call_id: str, edges: Edges | None) -> tuple[CallRecord, CallSnapshot] | None:
        """Set the record's ``edge`` to us in a transaction watching it, if the call is held with a
        readable dialog and, unless ``edges`` is None (a request of the dialog came here), an orphan
        in their light; the record as it was and the dialog."""
        keys = self.bus.keys
        async with self.bus.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(keys.call(call_id))
                raw = await pipe.hgetall(keys.call(call_id))
                stored = await pipe.get(keys.dialog(call_id))
                if not raw or stored is None:
                    return None
                record = CallRecord.from_hash(raw)
                if record.state not in HELD_STATES:
                    return None
                if edges is not None and not self._orphaned(record.edge, edges):
                    return None
                snapshot = CallSnapshot.from_json(stored)
                if self.ua.sessions.get(snapshot.dialog.key) is not None:
                    return None
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(keys.call(call_id), "edge", self.edge_id)
                await pipe.execute()
            except WatchError:
                return None
            except SnapshotError as exc:
                log.error(
                    "cannot adopt a call: its dialog is unreadable",
                    extra={"call_id": call_id, "error": str(exc)},
                )
                return None
        return record, snapshot

    async def _pending_hangup(self, call: Call, old_edge: str) -> None:
        """Act on a Hangup for the call that reached the old edge's control stream lately."""
        stream = self.bus.keys.edge_control(old_edge)
        start = f"{max(0, bus_now_ms() - int(COMMAND_LOOKBACK_S * 1000))}-0"
        try:
            page = await self.bus.redis.xrange(stream, min=start, max="+", count=1000)
        except REDIS_DOWN as exc:
            log.warning(
                "cannot read the old edge's commands", extra={"call_id": call.call_id, "error": str(exc)}
            )
            return
        for entry in self.bus.decode_entries(stream, page or []):
            message = entry.message
            if isinstance(message, Hangup) and message.call_id == call.call_id:
                call.obey(message)
                return


def _moved(old_contact: str, new_contact: str) -> bool:
    """Whether the peer reaches the dialog at another host or port than before."""
    try:
        old, new = NameAddr.parse(old_contact).uri, NameAddr.parse(new_contact).uri
    except SipParseError:
        return True
    if not isinstance(old, SipUri) or not isinstance(new, SipUri):
        return True
    return (old.host.lower(), old.port, old.transport) != (new.host.lower(), new.port, new.transport)
