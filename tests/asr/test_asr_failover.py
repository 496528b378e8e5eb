"""Two asr workers, one call streaming: the owner is killed mid-utterance, the other one finishes it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from asr_helpers import FRAME_BYTES, end_call, finals, start_call, stream_audio

from activecall.audio import word_accuracy
from activecall.bus import Bus
from activecall.config import RedisSettings
from activecall.registry import list_workers

SENTENCE = "I would like to speak with someone about my account."


def start_worker(config: Path, worker_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "activecall.asr", "--config", str(config), "--worker-id", worker_id,
         "--metrics-port", "0"],
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
    )  # fmt: skip


async def test_killed_worker_s_utterance_is_finished_by_the_other(
    redis_settings: RedisSettings, bus: Bus, phone_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    config = tmp_path / "active-call.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_settings.url}"\nprefix = "{redis_settings.prefix}"\nlease_ttl = 1.0\n'
        "[asr]\nendpoint_silence_ms = 400\n"
    )
    workers = {name: start_worker(config, name) for name in ("asr-a", "asr-b")}
    try:
        deadline = time.monotonic() + 60
        while len(await list_workers(bus.redis, bus.keys, "asr", ttl=5)) < 2:
            assert time.monotonic() < deadline, "the asr workers did not start"
            await asyncio.sleep(0.2)
        speech = phone_speech(SENTENCE)
        half = (len(speech) // 2) // FRAME_BYTES * FRAME_BYTES
        await start_call(bus, "failover")
        seq = await stream_audio(bus, "failover", speech[:half], pace_s=0.02)
        owner = (await bus.redis.get(bus.keys.lease("asr", "failover")) or b"").decode()
        assert owner in workers, f"no worker holds the call: {owner!r}"
        workers[owner].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        seq = await stream_audio(bus, "failover", speech[half:], pace_s=0.02, seq0=seq)
        speech_ended = time.monotonic()
        await stream_audio(bus, "failover", bytes(8000 * 2), pace_s=0.02, seq0=seq)
        (final,) = await finals(bus, "failover", 1, timeout_s=20)
        arrived = time.monotonic()
        survivor = (await bus.redis.get(bus.keys.lease("asr", "failover")) or b"").decode()
        accuracy = word_accuracy(SENTENCE, final.text)
        print(
            f"\nfailover: final {arrived - speech_ended:.2f} s after the end of speech, "
            f"{arrived - killed:.2f} s after the kill; {accuracy:.0%} of words right: {final.text!r}"
        )
        assert survivor in workers and survivor != owner
        assert arrived - speech_ended <= 3.0
        assert accuracy >= 0.5  # the words from before the kill were heard again by the survivor
        await end_call(bus, "failover")
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.kill()
            process.wait()
