"""The edge: the calls of one sip-edge process and the streams that drive them.

Inbound calls come from the user agent (:mod:`activecall.sip_edge.app.inbound`); outbound ones from
``edge:originate``, read in the consumer group ``sip-edge`` (:mod:`activecall.sip_edge.app.outbound`).
``edge:{id}:control`` carries Hangup and Transfer; a ``media.timeout`` event on a call's stream
hangs it up; the calls of a media worker that is lost or drains move to another one
(:mod:`activecall.sip_edge.app.failover`). The answered calls of an edge that died or drains are
adopted (:mod:`activecall.sip_edge.app.adoption`). Draining refuses new INVITEs with 503, stops
taking originates and adopting, and leaves the held calls to the other edges when there are any.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from activecall.bus import REDIS_DOWN, Bus, with_reconnect
from activecall.bus import now_ms as bus_now_ms
from activecall.config import Config
from activecall.contract import ConsumerGroup, EndReason
from activecall.messages import Hangup, MediaTimeout, Originate, Transfer
from activecall.sip_edge.app.admission import Acl, Admission, MediaPool
from activecall.sip_edge.app.adoption import SWEEP_S, Adoption
from activecall.sip_edge.app.call import Call
from activecall.sip_edge.app.calls import Calls
from activecall.sip_edge.app.failover import POLL_S, MediaFailover
from activecall.sip_edge.app.handler import WebhookHandler, make_handler
from activecall.sip_edge.app.inbound import Inbound, InboundContext
from activecall.sip_edge.app.legs import LegClient
from activecall.sip_edge.app.outbound import Outbound, OutboundContext
from activecall.sip_edge.sip.transaction.timers import BaseIntervals
from activecall.sip_edge.sip.transport.resolver import Resolver
from activecall.sip_edge.sip.transport.transport import TransportLayer
from activecall.sip_edge.sip.ua.registration import Registration, sends_register
from activecall.sip_edge.sip.ua.ua import IncomingCall, UaSettings, UserAgent
from activecall.store import CallStore

log = logging.getLogger("activecall.sip_edge.app.edge")

MAX_CALLS = 5000
RETRY_AFTER_S = 5
DRAIN_POLL_S = 0.2


@dataclass(frozen=True)
class EdgeOptions:
    max_calls: int = MAX_CALLS
    retry_after: int = RETRY_AFTER_S
    control_block_ms: int = 1000
    events_poll_s: float = 1.0
    shutdown_bye_timeout: float = 2.0
    media_poll_s: float = POLL_S
    adopt_sweep_s: float = SWEEP_S


class Edge:
    """Calls of one sip-edge process."""

    def __init__(
        self,
        config: Config,
        bus: Bus,
        edge_id: str,
        transport: TransportLayer,
        *,
        intervals: BaseIntervals | None = None,
        ua_settings: UaSettings | None = None,
        resolver: Resolver | None = None,
        options: EdgeOptions | None = None,
    ) -> None:
        self.config = config
        self.bus = bus
        self.edge_id = edge_id
        self.options = options or EdgeOptions()
        self.store = CallStore(bus.redis, bus.keys, bus.settings)
        self.acl = Acl(config.acl.allow, config.acl.deny)
        self.pool = MediaPool(bus.redis, bus.keys, config.redis.heartbeat_ttl)
        self.legs = LegClient(bus, self.pool)
        self.admission = Admission(self.pool, bus.redis, bus.keys, config.redis.heartbeat_ttl)
        self.handler = make_handler(config.handler)
        self.ua = UserAgent(transport, self, resolver=resolver, settings=ua_settings, intervals=intervals)
        self.calls = Calls(edge_id, bus, self.store, self.legs, self.spawn)
        self.draining = False
        self.registrations = [
            Registration(self.ua, reg) for reg in config.sip_registrations if sends_register(reg)
        ]
        for reg in config.sip_registrations:
            if not sends_register(reg):
                log.info(
                    "no REGISTER for this entry: its credentials answer challenges only",
                    extra={"registration": reg.name, "server": reg.server},
                )
        self.inbound = Inbound(
            InboundContext(
                config, self.calls, self.legs, self.acl, self.handler, self.admit, self.options.retry_after
            )
        )
        self.outbound = Outbound(
            OutboundContext(config, self.calls, self.legs, self.ua, self.admit, self.spawn)
        )
        self.failover = MediaFailover(
            bus.redis,
            bus.keys,
            self.calls,
            self.legs,
            self.spawn,
            failover_after=config.media.failover_after,
            registry_ttl=config.redis.heartbeat_ttl,
            external_ip=config.external_ip,
            new_key=config.media.failover_new_key,
            poll_s=self.options.media_poll_s,
        )
        self.adoption = Adoption(
            bus,
            self.calls,
            self.ua,
            self.spawn,
            edge_id,
            heartbeat_ttl=config.redis.heartbeat_ttl,
            sweep_s=self.options.adopt_sweep_s,
        )
        self.ua.unknown_dialog_handler = self.adoption.on_request
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._originate: asyncio.Task[None] | None = None
        # Loops also check this flag: a cancellation that lands inside a Redis command can come back
        # as a connection error, which the loops treat as Redis being down and would retry forever.
        self._running = True

    # ---------------------------------------------------------------- lifecycle

    @property
    def load(self) -> int:
        """Established dialogs: what the registry reports as this edge's load."""
        return len(self.ua.sessions)

    async def start(self) -> None:
        # The group exists before start() returns, so no originate published after it is missed.
        stream = self.bus.keys.originate()
        await with_reconnect(
            lambda: self.bus.ensure_group(stream, ConsumerGroup.ORIGINATE, "$"), "originate group"
        )
        self._loops = [
            asyncio.create_task(self._control_loop(), name="edge-control"),
            asyncio.create_task(self._events_loop(), name="edge-events"),
            asyncio.create_task(self.failover.run(), name="edge-media-failover"),
            asyncio.create_task(self.adoption.run(), name="edge-adoption"),
        ]
        self._originate = asyncio.create_task(self._originate_loop(), name="edge-originate")
        for registration in self.registrations:
            registration.start()

    async def drain(self) -> None:
        """Take no new calls (INVITEs get 503, originates stay queued), adopt none, and hand the held
        ones on: while another edge is live it adopts them (our beat says draining; the sweep lets go
        of each call another edge took, without a BYE); with none, once every call is answered they
        are left in Redis, without a BYE, for this edge's successor to adopt."""
        self.draining = True
        self.adoption.draining = True
        await self._stop_task(self._originate)
        self._originate = None
        while self.calls:
            held = list(self.calls.values())
            if all(call.answered for call in held) and not await self._other_edge_live():
                for call in held:
                    call.release()
                log.info("draining: calls left to this edge's successor", extra={"calls": len(held)})
                break
            await asyncio.sleep(DRAIN_POLL_S)
        await self.calls.wait_idle()

    async def _other_edge_live(self) -> bool:
        try:
            edges = await self.adoption.edges()
        except REDIS_DOWN:
            return True  # cannot tell: keep the calls until Redis answers or the drain timeout
        return bool(edges.live - edges.draining - {self.edge_id})

    async def stop(self) -> None:
        self.draining = True
        self._running = False
        self.failover.running = False
        self.adoption.running = False
        await self._stop_task(self._originate)
        for task in self._loops:
            await self._stop_task(task)
        calls = list(self.calls.values())
        for call in calls:
            call.hangup(EndReason.SHUTDOWN, "edge")
        if calls:
            await asyncio.wait(
                [asyncio.create_task(call.ended.wait()) for call in calls],
                timeout=self.options.shutdown_bye_timeout,
            )
        await asyncio.gather(*(r.stop() for r in self.registrations), return_exceptions=True)
        self.ua.close()
        for task in list(self._tasks):
            task.cancel()
        if isinstance(self.handler, WebhookHandler):
            await self.handler.close()

    @staticmethod
    async def _stop_task(task: asyncio.Task[None] | None) -> None:
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine, name=name or None)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("edge task failed", exc_info=task.exception(), extra={"task": task.get_name()})

    async def refusal(self) -> str | None:
        """Why a new call cannot be taken now (``draining``, ``max_calls``, or the role that has no
        room for it), or None."""
        if self.draining:
            return "draining"
        if len(self.calls) >= self.options.max_calls:
            return "max_calls"
        return await self.admission.lacking()

    async def admit(self) -> str | None:
        """:meth:`refusal`; a call with none is counted against the roles' room until the next read."""
        reason = await self.refusal()
        if reason is None:
            self.admission.admitted()
        return reason

    # ---------------------------------------------------------------- inbound and outbound

    def on_invite(self, call: IncomingCall) -> None:
        self.spawn(self.inbound.run(call), "inbound")

    async def _originate_loop(self) -> None:
        stream = self.bus.keys.originate()
        while self._running:
            if await self.refusal() is not None:
                await asyncio.sleep(0.25)
                continue
            try:
                entries = await self.bus.read_group(
                    ConsumerGroup.ORIGINATE,
                    self.edge_id,
                    {stream: ">"},
                    count=10,
                    block_ms=self.options.control_block_ms,
                )
                if entries:
                    await self.bus.ack(stream, ConsumerGroup.ORIGINATE, *(e.id for e in entries))
            except REDIS_DOWN as exc:
                log.warning("originate stream unreachable", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
                continue
            for entry in entries:
                if isinstance(entry.message, Originate):
                    self.spawn(self.outbound.run(entry.message), "outbound")

    # ---------------------------------------------------------------- commands and media events

    async def _control_loop(self) -> None:
        stream = self.bus.keys.edge_control(self.edge_id)
        # One millisecond back: a command written in this very millisecond may have the id T-0.
        cursor = f"{bus_now_ms() - 1}-0"
        while self._running:
            try:
                entries = await self.bus.read(
                    {stream: cursor}, count=50, block_ms=self.options.control_block_ms
                )
            except REDIS_DOWN as exc:
                log.warning("control stream unreachable", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
                continue
            for entry in entries:
                cursor = entry.id
                self._command(entry.message)

    def _command(self, message: object) -> None:
        call_id = getattr(message, "call_id", "")
        call = self.calls.get(call_id)
        command = message if isinstance(message, Hangup | Transfer) else None
        if call is None:
            claim = self.adoption.claiming(call_id)
            if claim is not None and command is not None:
                self.spawn(self._command_once_adopted(claim, command), f"command-{call_id}")
                return
            log.info(
                "command for an unknown call", extra={"call_id": call_id, "type": type(message).__name__}
            )
            return
        if command is not None:
            call.obey(command)

    async def _command_once_adopted(
        self, claim: asyncio.Future[Call | None], message: Hangup | Transfer
    ) -> None:
        try:
            call = await asyncio.shield(claim)
        except Exception:
            call = None  # the adoption failed, and said so
        if call is not None:
            call.obey(message)

    async def _events_loop(self) -> None:
        """Watch answered calls' event streams for ``media.timeout``, once every ``events_poll_s``:
        media timeouts are tens of seconds, and a blocking read returns on every event of every call."""
        keys = self.bus.keys
        while self._running:
            await asyncio.sleep(self.options.events_poll_s)
            watched = {keys.events(c.call_id): c for c in self.calls.values() if c.events_cursor}
            if not watched:
                continue
            try:
                entries = await self.bus.read({s: c.events_cursor for s, c in watched.items()}, count=1000)
            except REDIS_DOWN as exc:
                log.warning("event streams unreachable", extra={"error": str(exc)})
                continue
            for entry in entries:
                call = watched[entry.stream]
                call.events_cursor = entry.id
                if isinstance(entry.message, MediaTimeout):
                    call.hangup(EndReason.MEDIA_TIMEOUT, "media")
