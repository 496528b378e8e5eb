"""A worker process for session failover tests: ``python -m activecall.testing.probe_worker``.

It claims sessions of the role ``probe``. For each call it reads ``call:{id}:probe:in`` from its
cursor and copies every :class:`~activecall.messages.Probe` to ``call:{id}:probe:out`` stamped with
its own worker id, saving the cursor after each one; a ``CallEnded`` entry ends the session.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from activecall.bus import Bus
from activecall.config import RedisSettings
from activecall.logging import setup_logging
from activecall.messages import CallEnded, Probe
from activecall.sessions import SessionContext, SessionWorker

ROLE = "probe"


def make_handler(bus: Bus, worker_id: str, delay_s: float):  # type: ignore[no-untyped-def]
    async def handle(ctx: SessionContext) -> None:
        source = bus.keys.call_stream(ctx.call_id, "probe:in")
        sink = bus.keys.call_stream(ctx.call_id, "probe:out")
        while True:
            for entry in await ctx.read([source], count=10, block_ms=200):
                message = entry.message
                if isinstance(message, CallEnded):
                    return
                if isinstance(message, Probe):
                    await bus.publish(
                        sink, Probe(call_id=ctx.call_id, seq=message.seq, worker=worker_id), maxlen=0
                    )
                    await ctx.commit(entry)
                    if delay_s:
                        await asyncio.sleep(delay_s)

    return handle


async def run(url: str, prefix: str, worker_id: str, lease_ttl: float, delay_s: float) -> None:
    bus = Bus.from_settings(RedisSettings(url=url, prefix=prefix, lease_ttl=lease_ttl))
    worker = SessionWorker(bus, ROLE, worker_id, make_handler(bus, worker_id, delay_s), capacity=10)
    await worker.start()
    logging.getLogger("activecall.testing").info("probe worker ready")
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default="ac:")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--lease-ttl", type=float, default=1.0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait after each message")
    args = parser.parse_args()
    setup_logging("probe", args.worker_id)
    asyncio.run(run(args.redis_url, args.prefix, args.worker_id, args.lease_ttl, args.delay))


if __name__ == "__main__":
    main()
