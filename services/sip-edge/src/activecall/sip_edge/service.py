"""The sip-edge process: ``python -m activecall.sip_edge``.

Listeners come from the config: ``udp_port``, ``tcp_port`` and ``tls_port`` on ``addr`` (0 turns one
off); ``external_ip`` is the address written in Via, Contact and SDP. Load is the number of calls
held; capacity is :data:`~activecall.sip_edge.app.edge.MAX_CALLS`. The process runs the reaper
(:mod:`activecall.reaper`) too.
"""

from __future__ import annotations

import contextlib
import logging

import redis.asyncio as aioredis

from activecall.bus import Bus
from activecall.config import RedisSettings
from activecall.contract import Role
from activecall.reaper import Reaper
from activecall.redis_clients import async_client
from activecall.service import BaseService, Runtime, settle_collector
from activecall.sip_edge.app.edge import Edge, EdgeOptions
from activecall.sip_edge.sip.transaction.timers import BaseIntervals
from activecall.sip_edge.sip.transport.resolver import Resolver
from activecall.sip_edge.sip.transport.transport import (
    Transport,
    TransportLayer,
    TransportSettings,
    server_tls_context,
)
from activecall.sip_edge.sip.ua.ua import UaSettings

log = logging.getLogger("activecall.sip_edge.service")

EDGE_REDIS_CONNECTIONS = 512


def edge_bus(settings: RedisSettings) -> Bus:
    """The edge's own Redis client. A request to a media worker holds a connection until its reply
    comes, so a burst of calls needs many at once; this pool makes a caller wait for a free connection
    (up to the reply timeout) where the default one would fail the call."""
    redis = async_client(
        settings,
        aioredis.BlockingConnectionPool,
        max_connections=EDGE_REDIS_CONNECTIONS,
        timeout=settings.reply_timeout,
    )
    return Bus(redis, settings)


class SipEdgeService(BaseService):
    role = Role.SIP_EDGE

    def __init__(
        self,
        runtime: Runtime,
        *,
        intervals: BaseIntervals | None = None,
        ua_settings: UaSettings | None = None,
        resolver: Resolver | None = None,
        options: EdgeOptions | None = None,
        transport_settings: TransportSettings | None = None,
    ) -> None:
        super().__init__(runtime)
        config = runtime.config
        self.transport = TransportLayer(
            settings=transport_settings
            or TransportSettings(
                public_host=config.external_ip,
                tls_cert_file=config.tls_cert_file,
                tls_key_file=config.tls_key_file,
            )
        )
        self.bus = edge_bus(config.redis)
        self.edge = Edge(
            config,
            self.bus,
            runtime.worker_id,
            self.transport,
            intervals=intervals,
            ua_settings=ua_settings,
            resolver=resolver,
            options=options,
        )
        self.listening: dict[Transport, tuple[str, int]] = {}
        self.reaper = Reaper(runtime.bus, runtime.worker_id)

    @property
    def owned_keys(self) -> tuple[str, ...]:
        return (self.bus.keys.edge_control(self.edge.edge_id),)

    @property
    def load(self) -> int:
        return self.edge.load

    @property
    def capacity(self) -> int:
        return self.edge.options.max_calls

    @property
    def address(self) -> str:
        for transport in (Transport.UDP, Transport.TCP, Transport.TLS):
            if transport in self.listening:
                host, port = self.transport.sent_by(transport)
                return f"{host}:{port}"
        return ""

    async def start(self) -> None:
        config = self.runtime.config
        ports = {
            Transport.UDP: config.udp_port,
            Transport.TCP: config.tcp_port,
            Transport.TLS: config.tls_port,
        }
        for transport, port in ports.items():
            if not port:
                continue
            tls = (
                server_tls_context(config.tls_cert_file, config.tls_key_file)
                if transport is Transport.TLS
                else None
            )
            self.listening[transport] = await self.transport.listen(transport, config.addr, port, tls)
        await self.edge.start()
        self.reaper.start()
        settle_collector()

    async def drain(self) -> None:
        await self.edge.drain()

    async def stop(self) -> None:
        await self.reaper.stop()
        await self.edge.stop()
        await self.transport.close()
        with contextlib.suppress(Exception):
            await self.bus.close()
