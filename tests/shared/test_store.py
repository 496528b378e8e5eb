from __future__ import annotations

from activecall.bus import Bus
from activecall.config import RedisSettings
from activecall.store import CallRecord, CallStore


async def test_call_record_life(bus: Bus) -> None:
    store = CallStore(bus.redis, bus.keys)
    record = CallRecord(
        call_id="c1",
        direction="inbound",
        caller="+15550001",
        callee="+15550002",
        playbook="greeting.md",
        variables={"X-Twilio-CallSid": "CA123", "Proxy-Authorization": "Digest secret", "Authorization": "x"},
    )
    await store.create(record)
    assert await store.active_ids() == ["c1"]
    await store.update("c1", state="answered", answered=12.5, media_worker="media-1")
    await store.set_timings("c1", {"answer": 0.25})
    await store.set_timings("c1", {"first_audio": 0.75})
    await store.append_transcript("c1", "agent", "Hello", at=1.0)
    await store.append_transcript("c1", "caller", "Hi there", at=2.0)
    loaded = await store.get("c1")
    assert loaded is not None
    assert (loaded.state, loaded.answered, loaded.media_worker) == ("answered", 12.5, "media-1")
    assert loaded.variables == {"X-Twilio-CallSid": "CA123"}  # credentials never stored
    assert loaded.timings == {"answer": 0.25, "first_audio": 0.75}
    assert loaded.transcript == [
        {"speaker": "agent", "text": "Hello", "at": 1.0},
        {"speaker": "caller", "text": "Hi there", "at": 2.0},
    ]
    stale_cursor = bus.keys.cursor("asr", "c1")  # a session whose worker died with the call
    await bus.redis.hset(stale_cursor, "stream", "1-0")
    await store.finish("c1", reason="bye")
    assert 0 < await bus.redis.ttl(stale_cursor) <= RedisSettings().ended_audio_retention == 3600
    ended = await store.get("c1")
    assert ended is not None and (ended.state, ended.end_reason) == ("ended", "bye") and ended.ended > 0
    assert await store.active_ids() == []
    assert 0 < await bus.redis.ttl(bus.keys.call("c1")) <= 7 * 24 * 3600
    assert await store.get("unknown") is None


async def test_an_ended_call_s_keys_live_as_long_as_configured(bus: Bus) -> None:
    store = CallStore(bus.redis, bus.keys, RedisSettings(ended_retention=600, ended_audio_retention=60))
    await store.create(CallRecord(call_id="c2", direction="inbound"))
    await bus.redis.xadd(bus.keys.audio_out("c2"), {"m": b"x"})
    await bus.redis.xadd(bus.keys.events("c2"), {"m": b"x"})
    await store.finish("c2", reason="bye")
    assert 540 < await bus.redis.ttl(bus.keys.call("c2")) <= 600
    assert 540 < await bus.redis.ttl(bus.keys.events("c2")) <= 600
    assert 0 < await bus.redis.ttl(bus.keys.audio_out("c2")) <= 60
