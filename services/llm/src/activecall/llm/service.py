"""The llm service process: call sessions claimed from ``sessions:llm``, one conversation each."""

from __future__ import annotations

import asyncio

from activecall.contract import Role
from activecall.llm.conversation import Conversation
from activecall.llm.providers import Providers, resolve_provider_name
from activecall.service import Runtime, SessionService
from activecall.sessions import SessionContext


class LlmService(SessionService):
    role = Role.LLM

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.providers = Providers(runtime.config.llm)

    async def start(self) -> None:
        # Made off the event loop before the first call: importing and building the Anthropic client
        # takes seconds on a busy machine, long enough to lose a session lease if done on the loop.
        llm = self.runtime.config.llm
        await asyncio.to_thread(self.providers.get, resolve_provider_name(llm.provider, "", llm.api_key))
        await super().start()

    def session_capacity(self) -> int:
        return self.runtime.config.llm.capacity

    async def handle(self, ctx: SessionContext) -> None:
        await Conversation(ctx, self.runtime.config, self.providers).run()

    async def stop(self) -> None:
        await super().stop()
        await self.providers.close()
