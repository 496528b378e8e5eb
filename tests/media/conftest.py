"""A media worker started in-process on loopback, and legs opened on it with a peer at the far end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from activecall.bus import Bus
from activecall.config import Config, RedisSettings
from activecall.media.worker import MediaWorker
from activecall.testing.media import LegClient, RtpPeer, loopback_config

StartWorker = Callable[..., Awaitable[MediaWorker]]  # (config, worker_id=..., host=...)
OpenLeg = Callable[..., Awaitable[LegClient]]  # (worker, srtp=True, rtcp_mux=False, **peer args)


@pytest.fixture
def media_config(redis_settings: RedisSettings, tmp_path: Path) -> Config:
    return loopback_config(redis_settings, tmp_path / "recordings")


@pytest.fixture
async def start_worker(bus: Bus) -> AsyncIterator[StartWorker]:
    started: list[MediaWorker] = []

    async def start(config: Config, worker_id: str = "media-t1", host: str = "test-host") -> MediaWorker:
        worker = MediaWorker(bus, config, worker_id, host=host)
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.stop()


@pytest.fixture
async def worker(start_worker: StartWorker, media_config: Config) -> MediaWorker:
    return await start_worker(media_config)


@pytest.fixture
async def open_leg(bus: Bus) -> AsyncIterator[OpenLeg]:
    peers: list[RtpPeer] = []

    async def open_leg(
        worker: MediaWorker, srtp: bool = True, rtcp_mux: bool = False, **peer: object
    ) -> LegClient:
        """leg.open and leg.update against ``worker``, with a started peer."""
        client = LegClient(bus, worker.worker_id, await RtpPeer(srtp=srtp, **peer).start())  # type: ignore[arg-type]
        peers.append(client.peer)
        opened = await client.open(srtp=srtp, rtcp_mux=rtcp_mux)
        assert not opened.error, opened
        assert (await client.update()).ok
        return client

    yield open_leg
    for peer in peers:
        peer.close()
