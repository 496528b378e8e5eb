"""An llm service on a private Redis prefix, driven over the bus like the other services drive it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from activecall.bus import Bus
from activecall.config import Config, LlmSettings, PlaybookSettings, RedisSettings
from activecall.llm.service import LlmService
from activecall.messages import Message, SayText, SessionStart
from activecall.service import Runtime
from activecall.store import CallRecord, CallStore
from activecall.testing.anthropic_server import FakeAnthropicServer, _chunk, _sse_event

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
EDGE = "edge-1"
MEDIA = "media-1"
WAIT_S = 10.0


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, limit_s: float = WAIT_S) -> Any:
    """Poll ``check`` until it returns something true; fail after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def wait_sample(value: float, name: str, **labels: str) -> None:
    """Wait until a metric reaches ``value`` (turns are counted when committed, after their last piece)."""

    async def check() -> bool:
        return sample(name, **labels) == value

    await wait_for(check, f"{name}{labels} == {value}")


class GatedServer(FakeAnthropicServer):
    """Holds a streamed answer after ``hold_after`` text deltas (counted over all requests) until
    :meth:`release`; ``deltas_sent`` tells how far the answer has gone."""

    def __init__(self, *args: Any, hold_after: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold_after = hold_after
        self.deltas_sent = 0
        self.held = asyncio.Event()
        self._gate = asyncio.Event()

    def release(self) -> None:
        self._gate.set()

    async def _send_events(
        self, writer: asyncio.StreamWriter, events: Iterable[tuple[dict[str, Any], bool]], delay_s: float
    ) -> None:
        for event, is_delta in events:
            if is_delta:
                if self.deltas_sent == self.hold_after:
                    self.held.set()
                    await self._gate.wait()
                self.deltas_sent += 1
            writer.write(_chunk(_sse_event(event)))
            await writer.drain()


class Harness:
    def __init__(self, redis: RedisSettings, playbook_dir: Path) -> None:
        self.redis = redis
        self.playbook_dir = playbook_dir
        self.bus = Bus.from_settings(redis)
        self.services: list[LlmService] = []

    def config(self, **llm: Any) -> Config:
        return Config(
            redis=self.redis,
            llm=LlmSettings(**llm),
            playbooks=PlaybookSettings(dirs=[str(self.playbook_dir), str(EXAMPLES)]),
        )

    def playbook(self, name: str, text: str) -> str:
        (self.playbook_dir / name).write_text(text, encoding="utf-8")
        return name

    async def start(self, worker_id: str = "llm-1", **llm: Any) -> LlmService:
        runtime = Runtime("llm", self.config(**llm), worker_id, 0, 1.0)
        service = LlmService(runtime)
        await service.start()
        self.services.append(service)
        return service

    async def stop(self, service: LlmService) -> None:
        await service.stop()
        await service.runtime.bus.close()
        self.services.remove(service)

    async def close(self) -> None:
        for service in list(self.services):
            await self.stop(service)
        await self.bus.close()

    async def call(
        self, call_id: str, playbook: str, variables: dict[str, str] | None = None, media: str = MEDIA
    ) -> None:
        """Write the call record and post the session, as the edge does when a call is answered."""
        record = CallRecord(
            call_id=call_id, direction="inbound", edge=EDGE, media_worker=media, answered=time.time()
        )
        await CallStore(self.bus.redis, self.bus.keys).create(record)
        start = SessionStart(call_id=call_id, role="llm", playbook=playbook, variables=variables or {})
        await self.bus.publish(self.bus.keys.sessions("llm"), start, maxlen=0)

    async def emit(self, call_id: str, message: Message) -> str:
        return await self.bus.emit(call_id, message)

    async def read(self, stream: str) -> list[Message]:
        return [e.message for e in await self.bus.read({stream: "0"}, count=10_000)]

    async def say(self, call_id: str) -> list[SayText]:
        return [m for m in await self.read(self.bus.keys.say(call_id)) if isinstance(m, SayText)]

    async def said(self, call_id: str, turn_id: str) -> list[tuple[int, str, bool]]:
        return [(p.seq, p.text, p.last) for p in await self.say(call_id) if p.turn_id == turn_id]

    async def wait_said(self, call_id: str, turn_id: str, count: int = 1) -> list[tuple[int, str, bool]]:
        """The pieces of a turn once at least ``count`` are there (or the turn is closed)."""

        async def check() -> list[tuple[int, str, bool]]:
            pieces = await self.said(call_id, turn_id)
            return pieces if len(pieces) >= count or any(last for _, _, last in pieces) else []

        result: list[tuple[int, str, bool]] = await wait_for(check, f"say pieces of {turn_id}")
        return result

    async def wait_closed(self, call_id: str, turn_id: str) -> list[tuple[int, str, bool]]:
        async def check() -> list[tuple[int, str, bool]]:
            pieces = await self.said(call_id, turn_id)
            return pieces if any(last for _, _, last in pieces) else []

        result: list[tuple[int, str, bool]] = await wait_for(check, f"the last piece of {turn_id}")
        return result

    async def events(self, call_id: str, kind: type[Message]) -> list[Any]:
        return [m for m in await self.read(self.bus.keys.events(call_id)) if isinstance(m, kind)]

    async def wait_event(self, call_id: str, kind: type[Message], count: int = 1) -> list[Any]:
        async def check() -> list[Any]:
            found = await self.events(call_id, kind)
            return found if len(found) >= count else []

        result: list[Any] = await wait_for(check, f"{kind.TYPE} on the events stream")
        return result

    async def edge_commands(self) -> list[Message]:
        return await self.read(self.bus.keys.edge_control(EDGE))

    async def wait_edge_command(self) -> Message:
        commands: list[Message] = await wait_for(self.edge_commands, "a command on the edge control stream")
        return commands[0]

    async def history(self, call_id: str) -> list[dict[str, Any]]:
        return [json.loads(m) for m in await self.bus.redis.lrange(self.bus.keys.history(call_id), 0, -1)]

    async def committed(self, call_id: str, turn_id: str) -> list[dict[str, Any]]:
        """The history once the turn is in it (a turn is committed after its last piece is sent)."""

        async def check() -> list[dict[str, Any]]:
            history = await self.history(call_id)
            return history if any(m.get("turn_id") == turn_id for m in history) else []

        result: list[dict[str, Any]] = await wait_for(check, f"turn {turn_id} in the history")
        return result

    async def session_done(self, call_id: str) -> bool:
        pending = await self.bus.redis.xpending(self.bus.keys.sessions("llm"), "llm")
        lease = await self.bus.redis.exists(self.bus.keys.lease("llm", call_id))
        return not pending["pending"] and not lease
