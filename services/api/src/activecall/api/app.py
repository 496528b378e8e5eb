"""The FastAPI application of the gateway.

:func:`create_app` needs only a config and a bus, so tests build it without a service runtime;
:class:`activecall.api.service.ApiService` passes the runtime's health for ``/healthz``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from activecall.api import calls, control, live, ops
from activecall.api.gateway import Gateway, GatewayError
from activecall.api.metrics import ORIGINATES, RequestMetrics, route_template
from activecall.bus import Bus
from activecall.config import Config

log = logging.getLogger("activecall.api")

DESCRIPTION = """Voice-AI telephony gateway: place outbound calls, list and inspect calls, send
commands to a live call and follow its events (Server-Sent Events or WebSocket)."""


def create_app(
    config: Config,
    bus: Bus,
    health: Callable[[], dict[str, Any]] | None = None,
    keepalive_s: float = 15.0,
) -> FastAPI:
    """The gateway on ``bus``; ``health`` answers ``/healthz`` (default: always ok)."""
    app = FastAPI(title="active-call", version="0.1.0", description=DESCRIPTION)
    gateway = Gateway(config, bus, health, keepalive_s)
    app.state.gateway = gateway
    app.add_middleware(RequestMetrics)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for redis_down in (RedisConnectionError, RedisTimeoutError):
        app.add_exception_handler(redis_down, _redis_down(gateway))
    for module in (calls, control, live, ops):
        app.include_router(module.router)
    if not config.api.tokens:
        log.warning("no API tokens configured: only loopback clients (127.0.0.0/8, ::1) are served")
    return app


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if route_template(request.scope) == "/call":
        ORIGINATES.labels("invalid").inc()
    return await request_validation_exception_handler(request, exc)


def _redis_down(gateway: Gateway) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> Response:
        log.warning("redis unreachable", extra={"route": route_template(request.scope), "error": str(exc)})
        if route_template(request.scope) == "/call":
            ORIGINATES.labels("error").inc()
        return JSONResponse(
            {"detail": "redis unreachable"}, status_code=503, headers={"Retry-After": gateway.retry_after}
        )

    return handler
