"""The calls of one edge by id. A call opened here is in the table from its creation until it ends:
its context tells the table when, so no one forgets a call by hand."""

from __future__ import annotations

import asyncio
from collections.abc import ValuesView

from activecall import tokens
from activecall.bus import Bus
from activecall.contract import Direction
from activecall.sip_edge import metrics
from activecall.sip_edge.app.call import Call, CallContext, Spawn
from activecall.sip_edge.app.legs import LegClient
from activecall.store import CallStore


class Calls:
    def __init__(self, edge_id: str, bus: Bus, store: CallStore, legs: LegClient, spawn: Spawn) -> None:
        self._context = CallContext(edge_id, bus, store, legs, spawn, on_ended=self._ended)
        self._calls: dict[str, Call] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def open(
        self,
        direction: Direction,
        caller: str,
        callee: str,
        variables: dict[str, str],
        *,
        call_id: str = "",
        sip_call_id: str = "",
    ) -> Call:
        """A new call, under ``call_id`` when the api named it."""
        call = Call(
            self._context,
            call_id or tokens.token_hex(16),
            direction,
            caller,
            callee,
            sip_call_id,
            variables,
        )
        self._calls[call.call_id] = call
        self._idle.clear()
        metrics.child(metrics.CALLS_ACTIVE, direction).inc()
        return call

    def _ended(self, call: Call) -> None:
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]
            metrics.child(metrics.CALLS_ACTIVE, call.direction).dec()
            if not self._calls:
                self._idle.set()

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def values(self) -> ValuesView[Call]:
        return self._calls.values()

    def __len__(self) -> int:
        return len(self._calls)

    async def wait_idle(self) -> None:
        """Return once no call is left."""
        await self._idle.wait()
