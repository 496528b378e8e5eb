"""The HTTP gateway process: FastAPI served by uvicorn inside the common service runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import uvicorn

from activecall.api.app import create_app
from activecall.contract import Role
from activecall.service import BaseService, Runtime, run_service

GRACEFUL_SHUTDOWN_S = 2


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service runtime owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


class ApiService(BaseService):
    role = Role.API

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        config = runtime.config
        self.app = create_app(config, runtime.bus, health=runtime.health)
        self.server = _Server(
            uvicorn.Config(
                self.app,
                host=config.http_host,
                port=config.http_port,
                log_config=None,
                access_log=False,
                lifespan="off",
                # Event streams never end by themselves: cut them, clients resume with Last-Event-ID.
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            )
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return self.runtime.config.http_addr

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name="uvicorn")
        while not self.server.started:
            if self._task.done():
                await self._task  # surfaces the bind error
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task


def main(argv: Sequence[str] | None = None) -> None:
    run_service("api", ApiService, argv, serve_status=False, metrics_port=lambda c: c.http_port)
