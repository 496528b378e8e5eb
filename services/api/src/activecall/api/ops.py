"""Routes for operators: ``/healthz``, ``/readyz``, ``/metrics`` and ``/sd/targets``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from activecall import metrics
from activecall.api.auth import require_client
from activecall.api.calls import PROBLEMS
from activecall.api.gateway import Gateway, get_gateway
from activecall.api.sd import discovery_targets
from activecall.bus import REDIS_DOWN
from activecall.contract import Role

REDIS_PING_TIMEOUT_S = 2.0

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz(gateway: Gateway = Depends(get_gateway)) -> dict[str, Any]:
    """The process is alive (it does not look at Redis: that is /readyz)."""
    return gateway.health() if gateway.health else {"status": "ok", "role": "api"}


@router.get(
    "/readyz",
    responses={503: {"description": "Not ready; `reason` says why", "content": {"application/json": {}}}},
)
async def readyz(gateway: Gateway = Depends(get_gateway)) -> JSONResponse:
    """Ready to place calls: Redis answers and a live sip-edge and media worker exist."""
    reason = await unready_reason(gateway)
    if reason:
        return JSONResponse({"status": "unready", "reason": reason}, status_code=503)
    edges = await gateway.live_workers(Role.SIP_EDGE)
    media = await gateway.live_workers(Role.MEDIA)
    return JSONResponse(
        {
            "status": "ready",
            "sip_edge": sum(not w.draining for w in edges),
            "media": sum(not w.draining for w in media),
        }
    )


async def unready_reason(gateway: Gateway) -> str:
    if gateway.health is not None and gateway.health().get("status") == "draining":
        return "draining"
    try:
        await asyncio.wait_for(gateway.bus.redis.ping(), REDIS_PING_TIMEOUT_S)
    except (*REDIS_DOWN, TimeoutError) as exc:
        return f"redis unreachable: {exc or type(exc).__name__}"
    for role in (Role.SIP_EDGE, Role.MEDIA):
        if not any(not w.draining for w in await gateway.live_workers(role)):
            return f"no live {role} worker"
    return ""


@router.get("/metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    """Prometheus exposition of this process's metrics."""
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE_LATEST)


@router.get("/sd/targets", dependencies=[Depends(require_client)], responses=PROBLEMS)
async def sd_targets(gateway: Gateway = Depends(get_gateway)) -> list[dict[str, Any]]:
    """Prometheus HTTP service discovery: one target group per live worker of every role."""
    return await discovery_targets(gateway.bus.redis, gateway.bus.keys, gateway.config.redis.heartbeat_ttl)
