"""What every service process shares: start-up, the registry heartbeat, ``/metrics`` and
``/healthz``, draining on SIGTERM and a clean stop on SIGINT.

A service is a class with ``start``, ``drain`` and ``stop`` and two numbers, ``load`` and
``capacity``; :func:`run_service` does the rest::

    def main() -> None:
        run_service("media", MediaService)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from activecall import metrics
from activecall.bus import Bus
from activecall.config import Config, ConfigError, config_path_from_env, load_config
from activecall.logging import setup_logging
from activecall.registry import Heartbeat, WorkerInfo
from activecall.sessions import SessionContext, SessionWorker

log = logging.getLogger("activecall.service")

DEFAULT_DRAIN_TIMEOUT = 30.0
# A control stream outlives the last beat of its worker by this many heartbeat TTLs.
OWNED_KEY_TTLS = 3
# Allocations minus deallocations between young collections (CPython's default: 700), young collections
# between middle ones (default 10) and middle collections between full ones (default 10).
GC_THRESHOLDS = (100_000, 20, 100)
STATUS_FILE_ENV = "ACTIVECALL_STATUS_FILE"


def settle_collector(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """For a service whose start-up is done: what start-up built lives as long as the process, so it
    leaves every later collection (``gc.freeze``), and the collections run less often, so most of a
    request's or a packet's objects die before a scan. The objects of calls are freed by reference
    counting or, for their cycles, by the collections. Measured with ``bench_sip.py --rates 200
    --seconds 20``, two runs each: 3.20 and 3.22 ms of edge CPU per call with (20,000, 10, 10), 3.02
    and 2.99 with these. With CPython's defaults ``bench_media.py --diag`` showed the media worker
    running full collections of 6 to 8 ms at 250 legs, which broke its 20 ms tick."""
    gc.freeze()
    gc.set_threshold(*thresholds)


class BaseService:
    """Default behaviour of a service; subclasses override what they need."""

    role = ""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def load(self) -> int:
        return 0

    @property
    def capacity(self) -> int:
        return 1

    @property
    def address(self) -> str:
        """The address peers use to reach this worker's work port (SIP, RTP, HTTP), if any."""
        return ""

    @property
    def owned_keys(self) -> tuple[str, ...]:
        """Keys only this worker reads (its control stream), expiring unless its heartbeat goes on."""
        return ()

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between two beats in the worker registry."""
        return self.runtime.config.redis.heartbeat_interval

    async def start(self) -> None:
        """Begin taking work. Return once running; keep background work in tasks."""

    async def drain(self) -> None:
        """Take no new work and return when the held work has finished."""

    async def stop(self) -> None:
        """Stop everything now."""


ServiceFactory = Callable[["Runtime"], BaseService]


class Runtime:
    """One service process: its config, identity, bus and lifecycle."""

    def __init__(
        self, role: str, config: Config, worker_id: str, metrics_port: int, drain_timeout: float
    ) -> None:
        self.role = role
        self.config = config
        self.worker_id = worker_id
        self.metrics_port = metrics_port
        self.drain_timeout = drain_timeout
        self.bus = Bus.from_settings(config.redis)
        self.draining = asyncio.Event()
        self.stopping = asyncio.Event()
        self.service: BaseService | None = None
        self.heartbeat: Heartbeat | None = None
        self._status: asyncio.Server | None = None

    async def run(self, factory: ServiceFactory, serve_status: bool = True) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.draining.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        service = self.service = factory(self)
        if serve_status:
            self._status = await asyncio.start_server(
                self._serve_status, self.config.metrics.addr, self.metrics_port, reuse_address=True
            )
            self.metrics_port = self._status.sockets[0].getsockname()[1]
            status_file = os.environ.get(STATUS_FILE_ENV)
            if status_file:  # read by `activecall healthcheck` (container health checks)
                await asyncio.to_thread(Path(status_file).write_text, f"{self.metrics_port}\n")
        await service.start()
        info = WorkerInfo(
            id=self.worker_id,
            role=self.role,
            host=socket.gethostname(),
            pid=os.getpid(),
            metrics_port=self.metrics_port,
            metrics_host=_reachable_host(self.config.metrics.addr),
            address=service.address,
            capacity=service.capacity,
        )
        self.heartbeat = Heartbeat(
            self.bus.redis,
            self.bus.keys,
            info,
            lambda: service.load,
            service.heartbeat_interval,
            owned=service.owned_keys,
            owned_ttl=OWNED_KEY_TTLS * self.config.redis.heartbeat_ttl,
        )
        self.heartbeat.start()
        log.info(
            "service started",
            extra={
                "role": self.role,
                "metrics": f"{self.config.metrics.addr}:{self.metrics_port}",
                "address": service.address,
                "capacity": service.capacity,
            },
        )
        await self._wait_for_signal()
        await self.shutdown()
        return 0

    async def _wait_for_signal(self) -> None:
        drain = asyncio.create_task(self.draining.wait())
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({drain, stop}, return_when=asyncio.FIRST_COMPLETED)
        if self.draining.is_set() and not self.stopping.is_set():
            log.info("draining", extra={"timeout_s": self.drain_timeout})
            assert self.service is not None and self.heartbeat is not None
            self.heartbeat.info.draining = True
            with contextlib.suppress(Exception):
                await self.heartbeat.beat()
            drained = asyncio.create_task(self.service.drain())
            await asyncio.wait(
                {drained, stop}, timeout=self.drain_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not drained.done():
                log.warning("drain did not finish; stopping", extra={"load": self.service.load})
                drained.cancel()
        for task in (drain, stop):
            task.cancel()

    async def shutdown(self) -> None:
        if self.service is not None:
            await self.service.stop()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self._status is not None:
            self._status.close()
            await self._status.wait_closed()
        with contextlib.suppress(Exception):
            await self.bus.close()
        log.info("service stopped", extra={"role": self.role})

    def health(self) -> dict[str, object]:
        service = self.service
        return {
            "status": "draining" if self.draining.is_set() else "ok",
            "role": self.role,
            "worker": self.worker_id,
            "load": service.load if service else 0,
            "capacity": service.capacity if service else 0,
        }

    async def _serve_status(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A minimal HTTP/1.0 responder: GET /metrics and GET /healthz, one request per connection."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            parts = head.split(b" ", 2)
            path = parts[1].decode(errors="replace").split("?", 1)[0] if len(parts) > 1 else ""
            if parts[0] != b"GET":
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"only GET\n"
            elif path == "/metrics":
                status, ctype, body = "200 OK", metrics.CONTENT_TYPE_LATEST, metrics.exposition()
            elif path == "/healthz":
                status, ctype, body = "200 OK", "application/json", json.dumps(self.health()).encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


def _reachable_host(bind_addr: str) -> str:
    """The host others use to reach a socket bound to ``bind_addr`` (a wildcard means this host's name)."""
    return socket.gethostname() if bind_addr in ("", "0.0.0.0", "::") else bind_addr


def service_arguments(role: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"activecall-{role}", description=f"active-call {role} service")
    parser.add_argument(
        "--config", "-c", help="path of active-call.toml (default: $ACTIVECALL_CONFIG or ./active-call.toml)"
    )
    parser.add_argument(
        "--worker-id", default=os.environ.get("ACTIVECALL_WORKER_ID"), help="id in the worker registry"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="port of /metrics and /healthz (0: any free port)"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT, help="seconds to drain on SIGTERM"
    )
    return parser.parse_args(argv)


def default_worker_id(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


def run_service(
    role: str,
    factory: ServiceFactory,
    argv: Sequence[str] | None = None,
    serve_status: bool = True,
    metrics_port: Callable[[Config], int] | None = None,
) -> None:
    """Parse arguments, load the config, and run the service until SIGINT or a finished drain."""
    args = service_arguments(role, argv)
    worker_id = args.worker_id or default_worker_id(role)
    setup_logging(role, worker_id)
    try:
        config = load_config(args.config or config_path_from_env())
    except ConfigError as exc:
        print(f"activecall-{role}: invalid configuration\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    port = args.metrics_port
    if port is None:
        port = metrics_port(config) if metrics_port else config.metrics_port(role)

    async def main() -> int:
        runtime = Runtime(role, config, worker_id, port, args.drain_timeout)
        return await runtime.run(factory, serve_status=serve_status)

    raise SystemExit(_event_loop_runner()(main()))


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's runner (about three times cheaper per packet than the default loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed; using the default event loop")
        return asyncio.run
    runner: Callable[[Coroutine[Any, Any, int]], int] = uvloop.run
    return runner


class SessionService(BaseService):
    """A service whose work is call sessions claimed from ``sessions:{role}`` (asr, llm, tts)."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.sessions = SessionWorker(
            runtime.bus, runtime.role, runtime.worker_id, self.handle, capacity=self.session_capacity()
        )

    def session_capacity(self) -> int:
        return 100

    async def handle(self, ctx: SessionContext) -> None:
        raise NotImplementedError

    @property
    def load(self) -> int:
        return self.sessions.load

    @property
    def capacity(self) -> int:
        return self.sessions.capacity

    async def start(self) -> None:
        await self.sessions.start()

    async def drain(self) -> None:
        await self.sessions.drain()

    async def stop(self) -> None:
        await self.sessions.stop()
