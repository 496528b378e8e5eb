"""Who is served (tokens, loopback), health, readiness, metrics and Prometheus service discovery."""

from __future__ import annotations

import logging

import httpx
import pytest
from api_helpers import TOKEN, client_for, make_call, register, register_every_role
from prometheus_client import REGISTRY

from activecall.api.app import create_app
from activecall.api.auth import is_loopback, token_matches
from activecall.bus import Bus
from activecall.config import Config, RedisSettings
from activecall.testing.redis_server import free_port

OPEN_PATHS = ["/healthz", "/readyz", "/metrics", "/openapi.json"]
PROTECTED = [("GET", "/calls"), ("GET", "/calls/c1"), ("GET", "/sd/targets"), ("POST", "/calls/c1/interrupt")]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_tokens_are_required_when_configured(
    token_config: Config, bus: Bus, method: str, path: str
) -> None:
    await make_call(bus, "c1")
    async with client_for(create_app(token_config, bus)) as client:
        missing = await client.request(method, path)
        assert (missing.status_code, missing.json()) == (401, {"detail": "a valid bearer token is required"})
        assert missing.headers["www-authenticate"] == "Bearer"
        for wrong in ("Bearer nope", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"):
            response = await client.request(method, path, headers={"Authorization": wrong})
            assert response.status_code == 401, wrong
        good = await client.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code in (200, 202)


async def test_the_token_admits_non_loopback_clients(token_config: Config, bus: Bus) -> None:
    app = create_app(token_config, bus)
    async with client_for(app, client=("203.0.113.5", 5000)) as client:
        response = await client.get("/calls", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (response.status_code, response.json()) == (200, {"calls": []})


@pytest.mark.parametrize(("method", "path"), [*PROTECTED, ("POST", "/call")])
async def test_without_tokens_only_loopback_clients_are_served(
    config: Config, bus: Bus, method: str, path: str
) -> None:
    app = create_app(config, bus)
    async with client_for(app, client=("203.0.113.5", 5000)) as remote:
        response = await remote.request(method, path, json={})
        assert (response.status_code, response.json()) == (
            403,
            {"detail": "no API tokens are configured: only loopback clients are served"},
        )
        for open_path in OPEN_PATHS:
            assert (await remote.get(open_path)).status_code in (200, 503), open_path
    for host in ("127.0.0.1", "127.9.8.7", "::1"):
        async with client_for(app, client=(host, 5000)) as local:
            assert (await local.get("/calls")).status_code == 200, host


async def test_the_start_log_says_when_only_loopback_is_served(
    config: Config, token_config: Config, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="activecall.api")
    create_app(Config(redis=config.redis), bus)
    assert [r.getMessage() for r in caplog.records] == [
        "no API tokens configured: only loopback clients (127.0.0.0/8, ::1) are served"
    ]
    caplog.clear()
    create_app(token_config, bus)
    assert caplog.records == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("2001:db8::1", False),
        ("testclient", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_token_matches() -> None:
    assert token_matches("b", ["a", "b"])
    assert not token_matches("c", ["a", "b"])
    assert not token_matches("", ["a"])


async def test_healthz_reports_the_runtime_health(config: Config, bus: Bus) -> None:
    health = {"status": "ok", "role": "api", "worker": "api-1", "load": 0, "capacity": 1}
    async with client_for(create_app(config, bus, health=lambda: health)) as client:
        response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, health)


async def test_readyz_needs_a_live_edge_and_media_worker(client: httpx.AsyncClient, bus: Bus) -> None:
    response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (
        503,
        {"status": "unready", "reason": "no live sip-edge worker"},
    )
    await register(bus, "sip-edge", "edge-1")
    await register(bus, "media", "media-1", draining=True)
    response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (
        503,
        {"status": "unready", "reason": "no live media worker"},
    )
    await register(bus, "media", "media-2")
    response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready", "sip_edge": 1, "media": 1})


async def test_readyz_is_503_while_draining_or_without_redis(config: Config, bus: Bus) -> None:
    await register_every_role(bus)
    async with client_for(create_app(config, bus, health=lambda: {"status": "draining"})) as client:
        response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (503, {"status": "unready", "reason": "draining"})
    config.redis = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    dead = Bus.from_settings(config.redis)
    try:
        async with client_for(create_app(config, dead)) as client:
            response = await client.get("/readyz")
    finally:
        await dead.close()
    assert response.status_code == 503
    assert response.json()["reason"].startswith("redis unreachable: ")


async def test_sd_targets_lists_every_live_worker_of_every_role(client: httpx.AsyncClient, bus: Bus) -> None:
    await register(bus, "media", "media-b", metrics_port=9112)
    await register(bus, "media", "media-a", metrics_port=9102)
    await register(bus, "sip-edge", "edge-1", metrics_port=9101, draining=True)
    await register(bus, "tts", "tts-1", metrics_port=9105)
    await register(bus, "asr", "asr-dead", metrics_port=9103, age_s=60.0)
    response = await client.get("/sd/targets")
    assert response.status_code == 200
    assert response.json() == [
        {
            "targets": ["edge-1.internal:9101"],
            "labels": {"__meta_activecall_role": "sip-edge", "__meta_activecall_worker": "edge-1"},
        },
        {
            "targets": ["media-a.internal:9102"],
            "labels": {"__meta_activecall_role": "media", "__meta_activecall_worker": "media-a"},
        },
        {
            "targets": ["media-b.internal:9112"],
            "labels": {"__meta_activecall_role": "media", "__meta_activecall_worker": "media-b"},
        },
        {
            "targets": ["tts-1.internal:9105"],
            "labels": {"__meta_activecall_role": "tts", "__meta_activecall_worker": "tts-1"},
        },
    ]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_requests_by_route_and_originates_by_result(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    created = ("activecall_api_requests_total", {"method": "POST", "route": "/call", "status": "201"})
    details = (
        "activecall_api_requests_total",
        {"method": "GET", "route": "/calls/{call_id}", "status": "404"},
    )
    queued = ("activecall_api_originate_requests_total", {"result": "queued"})
    invalid = ("activecall_api_originate_requests_total", {"result": "invalid"})
    no_capacity = ("activecall_api_originate_requests_total", {"result": "no_capacity"})
    counters = [created, details, queued, invalid, no_capacity]
    before = [sample(name, **labels) for name, labels in counters]
    body = {"callee": "tel:+4930123456", "playbook": "sales.md"}
    assert (await client.post("/call", json=body)).status_code == 503
    await register_every_role(bus)
    call_id = (await client.post("/call", json=body)).json()["call_id"]
    assert (await client.post("/call", json={**body, "playbook": "nope.md"})).status_code == 422
    assert (await client.post("/call", json={"callee": "x"})).status_code == 422
    assert (await client.get("/calls/unknown-call")).status_code == 404
    after = [sample(name, **labels) for name, labels in counters]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 2, 1]
    exposition = (await client.get("/metrics")).text
    assert 'activecall_api_requests_total{method="POST",route="/call",status="201"}' in exposition
    assert call_id not in exposition and "unknown-call" not in exposition
