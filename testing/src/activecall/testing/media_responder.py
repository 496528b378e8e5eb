"""A stand-in media worker for tests and benchmarks: it speaks the leg contract, moves no audio.

It reads ``media:{worker}:control``, answers :class:`LegOpen` with :class:`LegOpened` (its address, the
next port of its range, and for SRTP a fresh AES_CM_128_HMAC_SHA1_80 key as base64 of key and salt),
and :class:`LegUpdate` / :class:`LegClose` with :class:`Ack`; it beats in ``workers:media`` like the
real worker. Every leg is kept in :attr:`MediaResponder.legs` for assertions. In another process::

    python -m activecall.testing.media_responder --redis-url URL --prefix ac: --worker-id media-1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from activecall.bus import REDIS_DOWN, Bus, now_ms
from activecall.config import RedisSettings
from activecall.messages import Ack, LegClose, LegOpen, LegOpened, LegUpdate, Message
from activecall.registry import Heartbeat, WorkerInfo
from activecall.testing.session_standins import SessionStandIns

log = logging.getLogger("activecall.testing.media_responder")

SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
SRTP_KEY_SALT_BYTES = 30
ROLE = "media"
MAX_PORT = 65534


@dataclass
class LegState:
    """What the responder knows of one leg."""

    call_id: str
    leg_id: str
    port: int
    srtp: bool
    crypto_key: str = ""
    updates: list[LegUpdate] = field(default_factory=list)
    closed: bool = False


class MediaResponder:
    """Answers leg requests on one worker id until stopped."""

    def __init__(
        self,
        bus: Bus,
        worker_id: str = "media-responder",
        *,
        address: str = "127.0.0.1",
        first_port: int = 40000,
        capacity: int = 1000,
        heartbeat_interval: float = 0.5,
    ) -> None:
        self.bus = bus
        self.worker_id = worker_id
        self.address = address
        self.capacity = capacity
        self.legs: dict[str, LegState] = {}
        self.opened = 0
        self.closed = 0
        self._first_port = first_port
        self._next_port = first_port
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running = True
        info = WorkerInfo(
            id=worker_id,
            role=ROLE,
            host=socket.gethostname(),
            pid=os.getpid(),
            metrics_port=0,
            address=address,
            capacity=capacity,
        )
        self.heartbeat = Heartbeat(bus.redis, bus.keys, info, lambda: self.active, heartbeat_interval)

    @property
    def active(self) -> int:
        return self.opened - self.closed

    async def start(self) -> None:
        """Beat once (so the worker is live at once), then serve in the background."""
        await self.heartbeat.beat()
        self.heartbeat.start()
        # One millisecond back: a request written in this very millisecond may have the id T-0.
        self._task = asyncio.create_task(
            self._serve(f"{now_ms() - 1}-0"), name=f"media-responder-{self.worker_id}"
        )

    async def stop(self) -> None:
        self._running = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.heartbeat.stop()

    async def crash(self) -> None:
        """Stop the way a killed process does: no more answers, no more beats, and the registry entry
        left behind with its last beat."""
        self._running = False
        for task in (self._task, self.heartbeat._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self.heartbeat._task = None

    async def drain(self) -> None:
        """Say ``draining`` in the registry, as a worker sent SIGTERM does; the legs stay served."""
        self.heartbeat.info.draining = True
        await self.heartbeat.beat()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checking after every handled request (bound it with
        ``asyncio.timeout``)."""
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    async def _serve(self, cursor: str) -> None:
        stream = self.bus.keys.media_control(self.worker_id)
        while self._running:
            try:
                entries = await self.bus.read({stream: cursor}, count=100, block_ms=1000)
            except REDIS_DOWN as exc:
                log.warning("redis unreachable", extra={"error": str(exc)})
                await asyncio.sleep(0.5)
                continue
            for entry in entries:
                cursor = entry.id
                await self._handle(entry.message)
            if entries:
                self._changed.set()

    async def _handle(self, message: Message) -> None:
        reply: Message
        if isinstance(message, LegOpen):
            reply = self._open(message)
        elif isinstance(message, LegUpdate):
            leg = self.legs.get(message.leg_id)
            if leg is not None:
                leg.updates.append(message)
            reply = Ack(call_id=message.call_id, ok=leg is not None, error="" if leg else "unknown leg")
        elif isinstance(message, LegClose):
            leg = self.legs.get(message.leg_id)
            if leg is not None and not leg.closed:
                leg.closed = True
                self.closed += 1
            reply = Ack(call_id=message.call_id, ok=leg is not None, error="" if leg else "unknown leg")
        else:
            return
        await self.bus.reply(getattr(message, "reply_to", ""), reply)

    def _open(self, message: LegOpen) -> LegOpened:
        port = self._next_port
        self._next_port = port + 2 if port + 2 < MAX_PORT else self._first_port
        key = message.crypto_key or (
            base64.b64encode(secrets.token_bytes(SRTP_KEY_SALT_BYTES)).decode("ascii") if message.srtp else ""
        )
        self.legs[message.leg_id] = LegState(message.call_id, message.leg_id, port, message.srtp, key)
        self.opened += 1
        return LegOpened(
            call_id=message.call_id,
            leg_id=message.leg_id,
            worker=self.worker_id,
            address=self.address,
            port=port,
            crypto_suite=SRTP_SUITE if message.srtp else "",
            crypto_key=key,
        )


async def _main(args: argparse.Namespace) -> None:
    bus = Bus.from_settings(RedisSettings(url=args.redis_url, prefix=args.prefix))
    responder = MediaResponder(bus, args.worker_id, capacity=args.capacity, first_port=args.first_port)
    await responder.start()
    stand_ins = await SessionStandIns(bus, args.capacity).start() if args.session_stand_ins else None
    log.info("media responder ready", extra={"worker": args.worker_id})
    try:
        await asyncio.Event().wait()
    finally:
        await responder.stop()
        if stand_ins is not None:
            await stand_ins.stop()
        await bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default="ac:")
    parser.add_argument("--worker-id", default="media-responder")
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--first-port", type=int, default=40000)
    parser.add_argument(
        "--session-stand-ins",
        action="store_true",
        help="also keep asr, llm and tts entries in the registry, so that an edge admits calls",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        run(_main(args))


if __name__ == "__main__":
    main()
