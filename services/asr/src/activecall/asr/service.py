"""The asr service process: call sessions claimed from `sessions:asr`."""

from __future__ import annotations

from activecall.service import SessionService
from activecall.sessions import SessionContext


class AsrService(SessionService):
    role = "asr"

    def session_capacity(self) -> int:
        return self.runtime.config.asr.capacity

    async def handle(self, ctx: SessionContext) -> None:
        raise NotImplementedError("the asr pipeline is not wired to the bus yet")
