"""Helpers of the gateway tests: fake live workers, call records, a real uvicorn in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator

import httpx
import uvicorn
from fastapi import FastAPI

from activecall.bus import Bus
from activecall.registry import WorkerInfo
from activecall.store import CallRecord, CallStore
from activecall.testing.redis_server import free_port

# The request of the integration guide's curl, byte for byte.
GUIDE_CURL_BODY = """{
    "callee": "sip:+18005551234@yourdomain.pstn.twilio.com",
    "playbook": "sales.md",
    "sip": {
      "username": "active-call",
      "password": "strongpassword",
      "realm": "yourdomain.pstn.twilio.com",
      "enableSrtp": true
    }
  }"""
GUIDE_BODY = json.loads(GUIDE_CURL_BODY)
LOOPBACK_CLIENT = ("127.0.0.1", 40001)
TOKEN = "s3cret-token-for-tests"


def client_for(
    app: FastAPI, client: tuple[str, int] = LOOPBACK_CLIENT, **kwargs: object
) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://gateway", **kwargs)  # type: ignore[arg-type]


async def register(
    bus: Bus,
    role: str,
    worker_id: str,
    *,
    load: int = 0,
    capacity: int = 10,
    draining: bool = False,
    age_s: float = 0.0,
    metrics_port: int = 9100,
) -> WorkerInfo:
    """Write a worker's registry entry as its heartbeat would."""
    info = WorkerInfo(
        id=worker_id,
        role=role,
        host="host-" + worker_id,
        pid=1,
        metrics_port=metrics_port,
        metrics_host=f"{worker_id}.internal",
        load=load,
        capacity=capacity,
        draining=draining,
        ts=time.time() - age_s,
    )
    await bus.redis.hset(bus.keys.workers(role), worker_id, info.to_json())
    return info


async def register_every_role(bus: Bus) -> None:
    """A live worker with room in each role a call needs."""
    await register(bus, "sip-edge", "edge-1", metrics_port=9101)
    await register(bus, "media", "media-1", metrics_port=9102)
    for port, role in enumerate(("asr", "llm", "tts"), start=9103):
        await register(bus, role, f"{role}-1", metrics_port=port)


async def make_call(bus: Bus, call_id: str = "c1", **fields: object) -> CallRecord:
    """A call record as the edge writes it once the call is up."""
    values: dict[str, object] = {
        "direction": "inbound",
        "state": "answered",
        "caller": "sip:+15550001@trunk.example",
        "callee": "sip:+15550002@gw.example",
        "edge": "edge-1",
        "media_worker": "media-1",
        "playbook": "sales.md",
        **fields,
    }
    record = CallRecord(call_id=call_id, **values)  # type: ignore[arg-type]
    await CallStore(bus.redis, bus.keys).create(record)
    return record


class _QuietServer(uvicorn.Server):
    """uvicorn leaving the test process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LiveServer:
    """The app served by a real uvicorn in this test's event loop (for streaming and WebSockets)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = _QuietServer(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="off")
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveServer:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            assert not self.task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await self.task
