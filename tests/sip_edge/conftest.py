"""Fixtures of the sip-edge tests."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sip_harness import TEST_INTERVALS, EdgeFactory, EdgeHarness

from activecall.bus import Bus
from activecall.config import Config, RedisSettings
from activecall.service import Runtime
from activecall.sip_edge.app.edge import EdgeOptions
from activecall.sip_edge.service import SipEdgeService
from activecall.sip_edge.sip.ua.ua import UaSettings
from activecall.testing.media_responder import MediaResponder
from activecall.testing.redis_server import free_port
from activecall.testing.session_standins import SessionStandIns


@pytest.fixture
async def start_edge(redis_settings: RedisSettings) -> AsyncIterator[EdgeFactory]:
    """Start an edge: ``await start_edge(tls_port=..., handler=...)``; config keys as keywords."""
    started: list[tuple[SipEdgeService, MediaResponder, SessionStandIns, Bus, Runtime]] = []

    async def start(
        ua_settings: UaSettings | None = None,
        media_capacity: int = 1000,
        session_capacity: int = 1000,
        edge_id: str = "edge-test",
        options: EdgeOptions | None = None,
        **overrides: Any,
    ) -> EdgeHarness:
        redis = dataclasses.replace(redis_settings, heartbeat_ttl=5.0, reply_timeout=2.0)
        values: dict[str, Any] = {
            "addr": "127.0.0.1",
            "udp_port": free_port(socket.SOCK_DGRAM),
            "redis": redis,
        }
        values.update(overrides)
        config = Config(**values)
        runtime = Runtime("sip-edge", config, edge_id, 0, 5.0)
        service = SipEdgeService(runtime, intervals=TEST_INTERVALS, ua_settings=ua_settings, options=options)
        bus = Bus.from_settings(redis)
        responder = MediaResponder(bus, "media-test", capacity=media_capacity)
        await responder.start()
        stand_ins = await SessionStandIns(bus, session_capacity).start()
        await service.start()
        started.append((service, responder, stand_ins, bus, runtime))
        return EdgeHarness(service, responder, bus, config)

    yield start
    for service, responder, stand_ins, bus, runtime in started:
        await service.stop()
        await responder.stop()
        await stand_ins.stop()
        await bus.close()
        await runtime.bus.close()
