"""What an end-to-end test reads back from a running system: one call's record, events and audio.

Every query opens its own bus (the tests are synchronous; the services own the event loop work).
A call is found by the phone's SIP user, which each test chooses, so tests sharing a system never read
each other's calls.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from activecall.audio import ncc_peak, resample, write_wav
from activecall.bus import Bus
from activecall.config import RedisSettings
from activecall.messages import (
    AudioChunk,
    Message,
    PlaybackFinished,
    PlaybackStarted,
    SaySynthesized,
    SpeechStopped,
    TranscriptFinal,
    TurnStarted,
)
from activecall.store import CallRecord, CallStore
from activecall.tts.engines.piper import PiperEngine

RATE = 8000
T = TypeVar("T")

# Every answer turn's latency (caller end of speech -> first RTP packet of the answer), for the summary.
TURN_LATENCIES_MS: list[int] = []
# The figures the tests measured, printed again at the end of the run (pytest hides a passing test's
# output unless run with -s).
FIGURES: list[str] = []


def report(figure: str) -> None:
    FIGURES.append(figure)
    print(f"\ne2e: {figure}")


def _with_bus(redis_url: str, work: Callable[[Bus], object]) -> object:
    async def main() -> object:
        bus = Bus.from_settings(RedisSettings(url=redis_url))
        try:
            return await work(bus)  # type: ignore[misc]
        finally:
            await bus.close()

    return asyncio.run(main())


async def _records(bus: Bus) -> list[CallRecord]:
    store = CallStore(bus.redis, bus.keys)
    prefix = f"{bus.keys.prefix}call:{{"
    ids = {k.decode()[len(prefix) :].split("}")[0] async for k in bus.redis.scan_iter(match=f"{prefix}*")}
    records = [await store.get(call_id) for call_id in ids]
    return [r for r in records if r is not None]


def find_call(redis_url: str, user: str, timeout: float = 15.0) -> CallRecord:
    """The call whose caller or callee is ``user`` (an inbound call's user part, an outbound callee's URI)."""
    deadline = time.monotonic() + timeout
    while True:
        records = _with_bus(redis_url, _records)
        assert isinstance(records, list)
        mine = [r for r in records if user in (r.caller, r.callee) or f"sip:{user}@" in r.callee]
        if mine:
            return max(mine, key=lambda r: r.created)
        assert time.monotonic() < deadline, f"no call from or to {user} within {timeout:.0f} s"
        time.sleep(0.2)


def wait_record(
    redis_url: str, call_id: str, done: Callable[[CallRecord], bool], timeout: float = 15.0
) -> CallRecord:
    async def get(bus: Bus) -> CallRecord | None:
        return await CallStore(bus.redis, bus.keys).get(call_id)

    deadline = time.monotonic() + timeout
    while True:
        record = _with_bus(redis_url, get)
        if isinstance(record, CallRecord) and (done(record) or time.monotonic() > deadline):
            return record
        assert time.monotonic() < deadline, f"call {call_id} has no record"
        time.sleep(0.2)


@dataclass
class CallStreams:
    events: list[Message]
    chunks: list[AudioChunk]

    def of_type(self, kind: type[T]) -> list[T]:
        return [e for e in self.events if isinstance(e, kind)]

    def turn_audio(self, turn_id: str) -> bytes:
        return b"".join(c.pcm for c in self.chunks if c.turn_id == turn_id)


def call_streams(redis_url: str, call_id: str) -> CallStreams:
    async def read(bus: Bus) -> CallStreams:
        events = await bus.read({bus.keys.events(call_id): "0"}, count=100_000)
        audio = await bus.read({bus.keys.audio_out(call_id): "0"}, count=100_000)
        chunks = [a.message for a in audio if isinstance(a.message, AudioChunk)]
        return CallStreams([e.message for e in events], chunks)

    streams = _with_bus(redis_url, read)
    assert isinstance(streams, CallStreams)
    return streams


def wait_events(
    redis_url: str, call_id: str, done: Callable[[CallStreams], bool], timeout: float, what: str
) -> CallStreams:
    deadline = time.monotonic() + timeout
    while True:
        streams = call_streams(redis_url, call_id)
        if done(streams):
            return streams
        if time.monotonic() > deadline:
            kinds = [type(e).__name__ for e in streams.events]
            raise AssertionError(f"{what}: not seen within {timeout:.0f} s; events: {kinds}")
        time.sleep(0.2)


def wait_greeting_played(redis_url: str, user: str, timeout: float = 20.0) -> None:
    """Until the agent's greeting has been played to ``user``'s call."""
    call = find_call(redis_url, user)
    wait_events(
        redis_url,
        call.call_id,
        lambda streams: any(p.turn_id == "greeting" for p in streams.of_type(PlaybackFinished)),
        timeout,
        "the end of the greeting",
    )


@dataclass
class CallerScript:
    """A caller WAV for the phone's microphone: silences and Piper sentences, in order.

    Piper's noise is off, so every run plays the same caller: the asr's word accuracy is then a
    property of the system, not of a random voice.
    """

    parts: list[str | float]
    sentences: list[str] = field(default_factory=list)

    def write(self, path: Path) -> Path:
        tts = PiperEngine(noise_scale=0.0, noise_w_scale=0.0)
        pcm = bytearray()
        for part in self.parts:
            if isinstance(part, str):
                self.sentences.append(part)
                pcm += resample(b"".join(tts.synthesize(part)), tts.sample_rate, RATE)
            else:
                pcm += bytes(int(part * RATE) * 2)
        write_wav(path, bytes(pcm), RATE)
        return path


def heard_matches(heard: bytes, turn_pcm: bytes, what: str) -> float:
    """The ncc peak of a turn's tts output inside what the phone heard; printed."""
    assert turn_pcm, f"the tts produced no audio for {what}"
    peak, lag = ncc_peak(heard, turn_pcm)
    report(f"{what}: heard by the phone vs tts output, ncc {peak:.3f} at {lag / RATE:.2f} s")
    return peak


def record_latencies(streams: CallStreams) -> list[int]:
    """Answer turns' latencies (the greeting has none: no caller speech before it)."""
    latencies = [p.latency_ms for p in streams.of_type(PlaybackStarted) if p.latency_ms > 0]
    TURN_LATENCIES_MS.extend(latencies)
    return latencies


def latency_summary(latencies: list[int]) -> str:
    if not latencies:
        return "no answer turns"
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):.0f} ms, p95 {p95} ms over {len(ordered)} turns"


def latency_breakdown(streams: CallStreams) -> list[str]:
    """Where each answer turn's latency went, from the events' wall-clock stamps: end of speech to
    the speech.stopped event, to the asr's final, to the llm's turn, to the tts's first audio, to the
    first RTP packet (playback.started)."""
    lines = []
    for played in streams.of_type(PlaybackStarted):
        if played.latency_ms <= 0:
            continue
        end = played.ts - played.latency_ms / 1000
        before = [e for e in streams.events if e.ts <= played.ts]
        mine = [e for e in before if getattr(e, "turn_id", played.turn_id) == played.turn_id]
        marks = [
            ("speech.stopped", max, [e.ts for e in before if isinstance(e, SpeechStopped)]),
            ("asr final", max, [e.ts for e in before if isinstance(e, TranscriptFinal)]),
            ("turn", max, [e.ts for e in mine if isinstance(e, TurnStarted)]),
            ("tts audio", min, [e.ts for e in mine if isinstance(e, SaySynthesized)]),
        ]
        parts = [f"{name} +{pick(stamps) - end:.2f}" for name, pick, stamps in marks if stamps]
        lines.append(", ".join([*parts, f"first RTP +{played.latency_ms / 1000:.2f} s"]))
    return lines
