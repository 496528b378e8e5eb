"""The media worker process: :class:`MediaWorker` under the common service runtime."""

from __future__ import annotations

import logging
import os

from activecall.media.worker import MediaWorker
from activecall.reaper import Reaper
from activecall.service import BaseService, Runtime, settle_collector

log = logging.getLogger("activecall.media.service")


def set_nice(nice: int) -> None:
    """Run this process at CPU priority ``nice`` (``[media] nice``; 0 leaves it as it is)."""
    if not nice:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        log.warning(
            "cannot raise the media worker's CPU priority without CAP_SYS_NICE; running at its own",
            extra={"nice": nice, "current": os.getpriority(os.PRIO_PROCESS, 0)},
        )
    else:
        log.info("media worker CPU priority set", extra={"nice": nice})


class MediaService(BaseService):
    """Heartbeat load = legs held, capacity = ``media.capacity``, address = the RTP address; it runs
    the reaper (:mod:`activecall.reaper`) too."""

    role = "media"

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.worker = MediaWorker(runtime.bus, runtime.config, runtime.worker_id)
        self.reaper = Reaper(runtime.bus, runtime.worker_id)

    @property
    def load(self) -> int:
        return self.worker.load

    @property
    def capacity(self) -> int:
        return self.worker.capacity

    @property
    def address(self) -> str:
        return self.worker.address

    @property
    def owned_keys(self) -> tuple[str, ...]:
        return (self.worker.control_key,)

    @property
    def heartbeat_interval(self) -> float:
        """A third of ``media.failover_after``: the edges move this worker's calls after that long
        without a beat, and one late beat must not be taken for a death."""
        config = self.runtime.config
        return min(config.redis.heartbeat_interval, config.media.failover_after / 3)

    async def start(self) -> None:
        set_nice(self.runtime.config.media.nice)
        await self.worker.start()
        self.reaper.start()
        settle_collector()

    async def drain(self) -> None:
        await self.worker.drain()

    async def stop(self) -> None:
        await self.reaper.stop()
        await self.worker.stop()
