"""The llm service process: call sessions claimed from `sessions:llm`."""

from __future__ import annotations

from activecall.service import SessionService
from activecall.sessions import SessionContext


class LlmService(SessionService):
    role = "llm"

    def session_capacity(self) -> int:
        return self.runtime.config.llm.capacity

    async def handle(self, ctx: SessionContext) -> None:
        raise NotImplementedError("the llm pipeline is not wired to the bus yet")
