"""The FastAPI application of the gateway."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response

from activecall import metrics
from activecall.service import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="active-call", version="0.1.0", description="Voice-AI telephony gateway")

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, Any]:
        """The process is alive."""
        return runtime.health()

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus exposition of this process's metrics."""
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE_LATEST)

    return app
