"""A real phone calls the agent over TLS with mandatory SRTP and hears the greeting."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from e2e_calls import report

from activecall.audio import ncc_peak, read_wav, resample, write_wav
from activecall.bus import Bus
from activecall.config import RedisSettings
from activecall.messages import AudioChunk, AudioFrame, PlaybackStarted, TurnStarted
from activecall.store import CallRecord, CallStore
from activecall.testing.baresip import BaresipPhone
from activecall.testing.system import System
from activecall.tts.engines import create_tts_engine


async def call_events(redis_url: str) -> tuple[str, list[object], list[AudioChunk]]:
    bus = Bus.from_settings(RedisSettings(url=redis_url))
    try:
        return await _call_events(bus)
    finally:
        await bus.close()


async def _call_events(bus: Bus) -> tuple[str, list[object], list[AudioChunk]]:
    (call_id,) = [m.decode() for m in await bus.redis.smembers(bus.keys.calls_active())] or [""]
    if not call_id:
        keys = [k.decode() for k in await bus.redis.keys(f"{bus.keys.prefix}call:{{*}}")]
        call_id = sorted(k.split("{")[1].split("}")[0] for k in keys)[-1]
    events = [e.message for e in await bus.read({bus.keys.events(call_id): "0"}, count=100_000)]
    chunks = [e.message for e in await bus.read({bus.keys.audio_out(call_id): "0"}, count=100_000)]
    return call_id, events, [c for c in chunks if isinstance(c, AudioChunk)]


def test_the_phone_hears_the_greeting_over_tls_and_srtp(system: System, tmp_path: Path) -> None:
    phone = BaresipPhone(tmp_path / "phone", None, "caller", certificate=system.certificate).start()
    try:
        assert phone.dial(f"sip:agent@127.0.0.1:{system.tls_port};transport=tls")["ok"]
        phone.wait_event("CALL_ESTABLISHED", 30)
        assert phone.wait_event("CALL_MENC")["param"] == "0,audio,AES_CM_128_HMAC_SHA1_80"
        time.sleep(8)
        call_id, events, chunks = asyncio.run(call_events(system.redis_url))
        phone.hangup()
        phone.wait_event("CALL_CLOSED", 10)
    finally:
        phone.stop()
    assert any(isinstance(e, TurnStarted) and e.turn_id == "greeting" for e in events)
    assert any(isinstance(e, PlaybackStarted) and e.turn_id == "greeting" for e in events)
    greeting = b"".join(c.pcm for c in chunks if c.turn_id == "greeting")
    assert greeting, "the tts produced no greeting audio"
    heard_file, _ = phone.dumps()
    assert heard_file is not None
    heard, rate = read_wav(heard_file)
    peak, lag = ncc_peak(heard, greeting)
    report(f"greeting heard by the phone vs tts output, ncc {peak:.3f} at {lag / rate:.2f} s")
    assert rate == 8000 and peak >= 0.9

    async def ended_record() -> CallRecord | None:
        bus = Bus.from_settings(RedisSettings(url=system.redis_url))
        store = CallStore(bus.redis, bus.keys)
        deadline = time.monotonic() + 10
        try:
            while True:
                record = await store.get(call_id)
                if (record is not None and record.state == "ended") or time.monotonic() > deadline:
                    return record
                await asyncio.sleep(0.1)
        finally:
            await bus.close()

    record = asyncio.run(ended_record())
    assert record is not None and record.state == "ended" and record.answered > 0
    assert record.timings["first_audio"] >= record.answered
    assert record.transcript[0]["speaker"] == "agent" and "help you today" in record.transcript[0]["text"]


async def caller_audio(redis_url: str) -> bytes:
    bus = Bus.from_settings(RedisSettings(url=redis_url))
    try:
        call_id, _, _ = await _call_events(bus)
        entries = await bus.read({bus.keys.audio_in(call_id): "0"}, count=100_000)
        return b"".join(e.message.pcm for e in entries if isinstance(e.message, AudioFrame))
    finally:
        await bus.close()


def test_what_the_phone_says_reaches_audio_in(system: System, tmp_path: Path) -> None:
    tts = create_tts_engine("piper")
    sentence = resample(
        b"".join(tts.synthesize("I would like to book an appointment.")), tts.sample_rate, 8000
    )
    wav = tmp_path / "caller.wav"
    write_wav(wav, bytes(8000) + sentence + bytes(8000 * 2 * 30), 8000)  # 0.5 s, speech, then silence
    phone = BaresipPhone(tmp_path / "phone", wav, "caller", certificate=system.certificate).start()
    try:
        assert phone.dial(f"sip:agent@127.0.0.1:{system.tls_port};transport=tls")["ok"]
        phone.wait_event("CALL_ESTABLISHED", 30)
        time.sleep(6)
        heard = asyncio.run(caller_audio(system.redis_url))
        phone.hangup()
        phone.wait_event("CALL_CLOSED", 10)
    finally:
        phone.stop()
    peak, lag = ncc_peak(heard, sentence)
    report(f"the phone's speech on audio:in vs the WAV it played, ncc {peak:.3f} at {lag / 8000:.2f} s")
    assert peak >= 0.9
