"""What every route works with: the config, the bus, the call store and the worker registry.

The gateway is stateless: each request reads what it needs from Redis, so any number of copies
can run behind a load balancer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.requests import HTTPConnection

from activecall.bus import Bus
from activecall.config import Config
from activecall.contract import FINAL_STATES, ConsumerGroup, Role
from activecall.registry import WorkerInfo, list_workers, pick_least_loaded
from activecall.store import CallRecord, CallStore


class GatewayError(Exception):
    """A request the gateway cannot serve; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def is_ended(record: CallRecord) -> bool:
    return record.ended > 0 or record.state in FINAL_STATES


@dataclass
class Gateway:
    config: Config
    bus: Bus
    health: Callable[[], dict[str, Any]] | None = None
    keepalive_s: float = 15.0
    store: CallStore = field(init=False)
    _originate_group_ready: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.store = CallStore(self.bus.redis, self.bus.keys, self.bus.settings)

    @property
    def retry_after(self) -> str:
        """Seconds until the registry can have changed: one heartbeat TTL."""
        return str(max(1, math.ceil(self.config.redis.heartbeat_ttl)))

    async def live_workers(self, role: str) -> list[WorkerInfo]:
        return await list_workers(self.bus.redis, self.bus.keys, role, self.config.redis.heartbeat_ttl)

    async def require_capacity(self) -> None:
        """Refuse (503) when a role a call needs (an edge, a media leg, asr, llm and tts sessions) has
        no live worker with room for one more call. The edge checks again when it dials."""
        for role in (Role.SIP_EDGE, Role.MEDIA, Role.ASR, Role.LLM, Role.TTS):
            if pick_least_loaded(await self.live_workers(role)) is None:
                raise GatewayError(
                    503, f"no live {role} worker with free capacity", {"Retry-After": self.retry_after}
                )

    async def ensure_originate_group(self) -> None:
        """Create the edges' consumer group from the start of the stream, so no request is missed
        by an edge that creates the group after the first ``POST /call``."""
        if not self._originate_group_ready:
            await self.bus.ensure_group(self.bus.keys.originate(), ConsumerGroup.ORIGINATE, "0")
            self._originate_group_ready = True

    async def record(self, call_id: str) -> CallRecord:
        try:
            record = await self.store.get(call_id)
        except (TypeError, ValueError):  # fields written before the owner created the record
            record = None
        if record is None:
            raise GatewayError(404, "unknown call")
        return record

    async def live_record(self, call_id: str) -> CallRecord:
        record = await self.record(call_id)
        if is_ended(record):
            raise GatewayError(409, "call has ended")
        return record

    async def records(self, call_ids: list[str]) -> list[CallRecord]:
        """Several call records in one round trip (without timings and transcript)."""
        pipe = self.bus.redis.pipeline(transaction=False)
        for call_id in call_ids:
            pipe.hgetall(self.bus.keys.call(call_id))
        found = []
        for raw in await pipe.execute():
            record = _parse_record(raw)
            if record is not None:
                found.append(record)
        return found


def _parse_record(raw: dict[Any, Any]) -> CallRecord | None:
    if not raw:
        return None
    try:
        return CallRecord.from_hash(raw)
    except (TypeError, ValueError):  # fields written before the owner created the record
        return None


def gateway_of(connection: HTTPConnection) -> Gateway:
    gateway: Gateway = connection.app.state.gateway
    return gateway


def get_gateway(request: Request) -> Gateway:
    """FastAPI dependency."""
    return gateway_of(request)
