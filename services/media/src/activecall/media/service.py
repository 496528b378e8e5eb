"""The media worker process: :class:`MediaWorker` under the common service runtime."""

from __future__ import annotations

from activecall.media.worker import MediaWorker
from activecall.service import BaseService, Runtime, settle_collector


class MediaService(BaseService):
    """Heartbeat load = legs held, capacity = ``media.capacity``, address = the RTP address."""

    role = "media"

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.worker = MediaWorker(runtime.bus, runtime.config, runtime.worker_id)

    @property
    def load(self) -> int:
        return self.worker.load

    @property
    def capacity(self) -> int:
        return self.worker.capacity

    @property
    def address(self) -> str:
        return self.worker.address

    async def start(self) -> None:
        await self.worker.start()
        settle_collector()

    async def drain(self) -> None:
        await self.worker.drain()

    async def stop(self) -> None:
        await self.worker.stop()
