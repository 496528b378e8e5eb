"""Running the asr service over the bus in tests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from activecall.bus import Bus
from activecall.config import Config, RedisSettings, load_config
from activecall.messages import AudioFrame, CallEnded, SessionStart, TranscriptFinal

FRAME_BYTES = 320  # 20 ms at 8 kHz
SILENCE = bytes(8000 * 2)  # one second


def asr_config(redis: RedisSettings, playbook_dir: Path | None = None, lease_ttl: float = 1.0) -> Config:
    config = load_config(None, env={})
    config.redis = RedisSettings(url=redis.url, prefix=redis.prefix, lease_ttl=lease_ttl)
    config.asr.endpoint_silence_ms = 400
    # The sentences of these tests are separated by 1 s of silence: an unfinished verdict must end its
    # turn within it too (the end of the turn itself is tested in test_turn_detector.py).
    config.asr.max_silence_ms = 800
    if playbook_dir is not None:
        config.playbooks.dirs = [str(playbook_dir)]
    return config


def write_hint_playbook(folder: Path, hints: list[str]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    lines = (
        ["---", "greeting: Hello.", "asr:", "  hints:"]
        + [f"    - {h!r}" for h in hints]
        + ["---", "Be brief.", ""]
    )
    (folder / "dental.md").write_text("\n".join(lines))
    return "dental.md"


async def start_call(bus: Bus, call_id: str, playbook: str = "") -> None:
    start = SessionStart(call_id=call_id, role="asr", playbook=playbook, sample_rate=8000)
    await bus.publish(bus.keys.sessions("asr"), start, maxlen=0)


async def stream_audio(bus: Bus, call_id: str, pcm: bytes, pace_s: float = 0.0, seq0: int = 0) -> int:
    """Append 20 ms frames to audio:in (paced in real time when pace_s > 0); returns the next seq."""
    seq = seq0
    stream = bus.keys.audio_in(call_id)
    for i in range(0, len(pcm), FRAME_BYTES):
        frame = AudioFrame(call_id=call_id, pcm=pcm[i : i + FRAME_BYTES], seq=seq, at_ms=seq * 20)
        await bus.publish(stream, frame, maxlen=bus.settings.audio_maxlen)
        seq += 1
        if pace_s:
            await asyncio.sleep(pace_s)
    return seq


async def end_call(bus: Bus, call_id: str) -> None:
    await bus.emit(call_id, CallEnded(reason="test"))


async def finals(bus: Bus, call_id: str, count: int, timeout_s: float) -> list[TranscriptFinal]:
    deadline = time.monotonic() + timeout_s
    while True:
        entries = await bus.read({bus.keys.events(call_id): "0"}, count=10_000)
        found = [e.message for e in entries if isinstance(e.message, TranscriptFinal)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)
