"""Call records in Redis: the hash ``call:{id}`` and the set ``calls:active``.

The sip-edge owns a record and writes its state; other services add their own fields (the media
worker, timings, the transcript). Nested values are stored as JSON strings. Credentials never enter
a record: headers that carry them are dropped from the call variables.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from typing import Any

import redis.asyncio as aioredis

from activecall.bus import Command, Keys, as_str
from activecall.config import RedisSettings
from activecall.contract import SESSION_ROLES, CallState

_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate"}
)
_JSON_FIELDS = frozenset({"variables"})
# Timings and the transcript have keys of their own, so services append to them without races.
_SEPARATE_FIELDS = frozenset({"timings", "transcript"})


def scrub_variables(variables: dict[str, str]) -> dict[str, str]:
    """Call variables without anything that carries credentials."""
    return {k: v for k, v in variables.items() if k.lower() not in _CREDENTIAL_HEADERS}


@dataclass
class CallRecord:
    call_id: str
    direction: str
    state: str = CallState.NEW
    caller: str = ""
    callee: str = ""
    edge: str = ""
    media_worker: str = ""
    playbook: str = ""
    sip_call_id: str = ""
    end_reason: str = ""
    created: float = field(default_factory=time.time)
    answered: float = 0.0
    ended: float = 0.0
    variables: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    transcript: list[dict[str, Any]] = field(default_factory=list)

    def to_hash(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(self):
            key = f.name
            if key in _SEPARATE_FIELDS:
                continue
            value = getattr(self, key)
            if key == "variables":
                value = scrub_variables(value)
            out[key] = json.dumps(value) if key in _JSON_FIELDS else str(value)
        return out

    @classmethod
    def from_hash(cls, raw: dict[Any, Any]) -> CallRecord:
        data = {as_str(k): as_str(v) for k, v in raw.items()}
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data or f.name in _SEPARATE_FIELDS:
                continue
            value: Any = data[f.name]
            if f.name in _JSON_FIELDS:
                value = json.loads(value)
            elif f.type in ("float", float):
                value = float(value)
            kwargs[f.name] = value
        return cls(**kwargs)


def hset_command(key: str, mapping: dict[str, str]) -> Command:
    return ("HSET", key, *(item for pair in mapping.items() for item in pair))


def create_commands(keys: Keys, record: CallRecord) -> list[Command]:
    """Write ``record`` and add it to ``calls:active``."""
    return [
        hset_command(keys.call(record.call_id), record.to_hash()),
        ("SADD", keys.calls_active(), record.call_id),
    ]


def record_time(value: bytes | str | None) -> float:
    """A time field of a call record (``created``, ``ended``) read raw: 0.0 when absent or unreadable."""
    try:
        return float(value) if value is not None else 0.0
    except ValueError:
        return 0.0


def finish_commands(
    settings: RedisSettings, keys: Keys, call_id: str, reason: str, state: str = CallState.ENDED
) -> list[Command]:
    """End the record, take it out of ``calls:active`` and let its keys and streams expire after
    ``ended_retention`` (the audio and say streams after ``ended_audio_retention``); run them in a
    transaction: a reader must not see an ended record still active. Every end runs these: the
    edge's and the reaper's."""
    values = {"state": state, "end_reason": reason, "ended": str(time.time())}
    kept = (
        keys.call(call_id),
        keys.events(call_id),
        *(keys.call_stream(call_id, n) for n in sorted(_SEPARATE_FIELDS)),
    )
    # A session deletes its cursor when it ends; one that never ends (its worker died as the call
    # did) must not leave it for good.
    cursors = tuple(keys.cursor(role, call_id) for role in SESSION_ROLES)
    short_lived = (keys.audio_in(call_id), keys.audio_out(call_id), keys.say(call_id), *cursors)
    return [
        hset_command(keys.call(call_id), values),
        ("SREM", keys.calls_active(), call_id),
        # The dialog holds SRTP keys and continues nothing once the call has ended.
        ("DEL", keys.dialog(call_id)),
        *(("EXPIRE", key, settings.ended_retention) for key in kept),
        *(("EXPIRE", key, settings.ended_audio_retention) for key in short_lived),
    ]


def transaction(commands: list[Command]) -> list[Command]:
    """``commands`` between MULTI and EXEC."""
    return [("MULTI",), *commands, ("EXEC",)]


class CallStore:
    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: RedisSettings | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings or RedisSettings()

    async def create(self, record: CallRecord) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for command in create_commands(self.keys, record):
            pipe.execute_command(*command)
        await pipe.execute()

    async def update(self, call_id: str, **values: Any) -> None:
        mapping = {
            k: json.dumps(scrub_variables(v)) if k in _JSON_FIELDS else str(v) for k, v in values.items()
        }
        await self.redis.hset(self.keys.call(call_id), mapping=mapping)  # type: ignore[arg-type]

    async def set_timings(self, call_id: str, timings: dict[str, float]) -> None:
        """Record several timings in one write."""
        if timings:
            mapping = {name: repr(value) for name, value in timings.items()}
            await self.redis.hset(self.keys.call_stream(call_id, "timings"), mapping=mapping)  # type: ignore[arg-type]

    async def append_transcript(self, call_id: str, speaker: str, text: str, at: float | None = None) -> None:
        line = json.dumps({"speaker": speaker, "text": text, "at": at or time.time()})
        await self.redis.rpush(self.keys.call_stream(call_id, "transcript"), line)

    async def drop_transcript_tail(self, call_id: str, lines: list[tuple[str, str]]) -> None:
        """Remove the last transcript lines if they are ``lines`` (speaker, text): words taken back."""
        if not lines:
            return
        key = self.keys.call_stream(call_id, "transcript")
        tail = await self.redis.lrange(key, -len(lines), -1)
        said = [(json.loads(raw)["speaker"], json.loads(raw)["text"]) for raw in tail]
        if said == lines:
            await self.redis.ltrim(key, 0, -len(lines) - 1)

    async def get(self, call_id: str) -> CallRecord | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.call(call_id))
        pipe.hgetall(self.keys.call_stream(call_id, "timings"))
        pipe.lrange(self.keys.call_stream(call_id, "transcript"), 0, -1)
        raw, timings, transcript = await pipe.execute()
        if not raw:
            return None
        record = CallRecord.from_hash(raw)
        record.timings = {as_str(k): float(v) for k, v in timings.items()}
        record.transcript = [json.loads(line) for line in transcript]
        return record

    async def active_ids(self) -> list[str]:
        return sorted(as_str(m) for m in await self.redis.smembers(self.keys.calls_active()))

    async def finish(self, call_id: str, reason: str, state: str = CallState.ENDED) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for command in finish_commands(self.settings, self.keys, call_id, reason, state):
            pipe.execute_command(*command)
        await pipe.execute()
