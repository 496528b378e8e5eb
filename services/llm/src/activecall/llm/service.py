"""The llm service process: call sessions claimed from ``sessions:llm``, one conversation each."""

from __future__ import annotations

from activecall.llm.conversation import Conversation
from activecall.llm.providers import Providers
from activecall.service import Runtime, SessionService
from activecall.sessions import SessionContext


class LlmService(SessionService):
    role = "llm"

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.providers = Providers(runtime.config.llm)

    def session_capacity(self) -> int:
        return self.runtime.config.llm.capacity

    async def handle(self, ctx: SessionContext) -> None:
        await Conversation(ctx, self.runtime.config, self.providers).run()

    async def stop(self) -> None:
        await super().stop()
        await self.providers.close()
