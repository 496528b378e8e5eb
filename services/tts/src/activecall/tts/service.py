"""The tts service process: call sessions claimed from `sessions:tts`."""

from __future__ import annotations

from activecall.service import SessionService
from activecall.sessions import SessionContext


class TtsService(SessionService):
    role = "tts"

    def session_capacity(self) -> int:
        return self.runtime.config.tts.capacity

    async def handle(self, ctx: SessionContext) -> None:
        raise NotImplementedError("the tts pipeline is not wired to the bus yet")
