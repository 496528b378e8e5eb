"""Bus benchmark: 20 ms audio frames from simulated calls, append-to-read latency and throughput.

A producer process plays the media worker: every 20 ms it appends one AudioFrame (160 samples of
PCM16, 320 bytes) per call to ``call:{id}:audio:in``, pipelined per tick. A consumer process plays
the asr workers: tasks that each follow a group of calls with blocking XREAD. Latency is the time
from the append (the envelope's timestamp) to the decoded message in the consumer. Run with
``make bench-bus``; REDIS_URL selects a server, otherwise a private redis-server is started.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import time

import uvloop

from activecall.bus import Bus
from activecall.config import RedisSettings
from activecall.messages import AudioFrame
from activecall.testing.redis_server import RedisServer

FRAME_S = 0.020
PCM = bytes(320)
STREAMS_PER_READER = 50


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def produce(settings: RedisSettings, calls: int, seconds: float, start_at: float) -> None:
    bus = Bus.from_settings(settings)
    streams = [bus.keys.audio_in(f"bench-{i}") for i in range(calls)]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    ticks = int(seconds / FRAME_S)
    origin = time.monotonic()
    for tick in range(ticks):
        await bus.publish_many(
            ((s, AudioFrame(call_id=s, pcm=PCM, seq=tick, at_ms=tick * 20)) for s in streams),
            maxlen=settings.audio_maxlen,
        )
        delay = origin + (tick + 1) * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await bus.close()


async def consume(settings: RedisSettings, calls: int, expected: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    bus = Bus.from_settings(settings)
    streams = [bus.keys.audio_in(f"bench-{i}") for i in range(calls)]
    latencies: list[float] = []
    received = 0
    done = asyncio.Event()
    cpu_start = time.process_time()

    async def reader(group: list[str]) -> None:
        nonlocal received
        positions = dict.fromkeys(group, "0")
        while not done.is_set():
            entries = await bus.read(positions, count=200, block_ms=200)
            now = time.time()
            for entry in entries:
                positions[entry.stream] = entry.id
                latencies.append(now - entry.message.ts)
            received += len(entries)
            if received >= expected:
                done.set()

    groups = [streams[i : i + STREAMS_PER_READER] for i in range(0, calls, STREAMS_PER_READER)]
    first = time.time()
    readers = [asyncio.create_task(reader(g)) for g in groups]
    try:
        await asyncio.wait_for(done.wait(), timeout=expected / (calls * 50) + 30)
    except TimeoutError:
        pass
    elapsed = time.time() - first
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    cpu = time.process_time() - cpu_start
    await bus.close()
    queue.put((latencies, received, elapsed, cpu))


def run_producer(settings: RedisSettings, calls: int, seconds: float, start_at: float) -> None:
    uvloop.run(produce(settings, calls, seconds, start_at))


def run_consumer(settings: RedisSettings, calls: int, expected: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    uvloop.run(consume(settings, calls, expected, queue))


def bench(url: str, calls: int, seconds: float) -> dict[str, float]:
    settings = RedisSettings(url=url, prefix=f"bench{os.getpid()}-{calls}:")
    expected = calls * int(seconds / FRAME_S)
    queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    consumer = mp.Process(target=run_consumer, args=(settings, calls, expected, queue))
    consumer.start()
    start_at = time.time() + 1.0
    producer = mp.Process(target=run_producer, args=(settings, calls, seconds, start_at))
    producer.start()
    latencies, received, elapsed, cpu = queue.get(timeout=seconds + 120)
    steady = latencies[len(latencies) // 10 :]  # the first tenth includes connection set-up
    producer.join()
    consumer.join()
    return {
        "calls": calls,
        "offered_per_s": calls / FRAME_S,
        "received": received,
        "expected": expected,
        "msgs_per_s": received / max(elapsed - 1.0, 1e-9),
        "p50_ms": percentile(steady, 0.50) * 1000,
        "p99_ms": percentile(steady, 0.99) * 1000,
        "consumer_us_per_msg": cpu / max(received, 1) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL")
    server = None
    if not url:
        server = RedisServer().start()
        url = server.url
    try:
        print(f"bus: 20 ms AudioFrame (320 B PCM) per call, {args.seconds:.0f} s per level, redis {url}")
        heads = ("calls", "offered/s", "msgs/s", "lost", "p50 ms", "p99 ms", "consumer us/msg")
        widths = (6, 10, 10, 6, 8, 8, 16)
        print(" ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)))
        for calls in args.calls:
            r = bench(url, calls, args.seconds)
            lost = int(r["expected"] - r["received"])
            print(
                f"{calls:>6} {r['offered_per_s']:>10.0f} {r['msgs_per_s']:>10.0f} {lost:>6} "
                f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['consumer_us_per_msg']:>16.1f}"
            )
    finally:
        if server is not None:
            server.stop()
    print(f"max RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")


if __name__ == "__main__":
    main()
