"""Fixtures shared by every test: a real Redis (private server unless REDIS_URL is set)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from activecall.bus import Bus
from activecall.config import RedisSettings
from activecall.testing.redis_server import RedisServer, external_redis_url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = external_redis_url()
    if url:
        yield url
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_settings(redis_url: str) -> RedisSettings:
    """Settings with a prefix of this test's own, so tests never see each other's keys."""
    return RedisSettings(url=redis_url, prefix=f"t{secrets.token_hex(4)}:", lease_ttl=1.0)


@pytest.fixture
async def bus(redis_settings: RedisSettings) -> AsyncIterator[Bus]:
    bus = Bus.from_settings(redis_settings)
    try:
        yield bus
    finally:
        await bus.close()
