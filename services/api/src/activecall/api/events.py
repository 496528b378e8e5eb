"""A call's live events: ``call:{id}:events`` as Server-Sent Events and over a WebSocket.

Every client reads the stream with its own cursor (plain XREAD, no consumer group), from the
beginning by default, so it sees the whole call; ``Last-Event-ID`` (the Redis entry id of the last
event it saw) resumes after that entry. Both end after ``call.ended``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

from activecall.api.gateway import Gateway, GatewayError, is_ended
from activecall.api.metrics import EVENT_STREAMS
from activecall.bus import Entry, as_str
from activecall.messages import CallEnded, Message

START_OF_STREAM = "0"
READ_BATCH = 100
# A blocking XREAD must return before redis-py's socket timeout (5 s by default) or the client gives up
# on the connection; longer keep-alive periods are made of several reads.
MAX_BLOCK_MS = 4000
SSE_RETRY_MS = 2000
KEEPALIVE_COMMENT = ": keep-alive\n\n"


def event_data(message: Message) -> dict[str, Any]:
    """The message's envelope and fields as JSON-ready data; bytes become base64 text."""
    wire = message.to_wire()
    data: dict[str, Any] = {"call_id": wire["call_id"], "ts": wire["ts"]}
    for name, value in wire.items():
        if name in ("v", "type", "call_id", "ts"):
            continue
        data[name] = base64.b64encode(value).decode() if isinstance(value, bytes) else value
    return data


def sse_event(entry: Entry) -> str:
    """One event in the text/event-stream format (HTML Living Standard, section 9.2.6)."""
    data = json.dumps(event_data(entry.message), separators=(",", ":"))
    return f"id: {entry.id}\nevent: {entry.message.TYPE}\ndata: {data}\n\n"


def ws_event(entry: Entry) -> dict[str, Any]:
    return {"id": entry.id, "event": entry.message.TYPE, "data": event_data(entry.message)}


async def follow(gateway: Gateway, call_id: str, after: str = START_OF_STREAM) -> AsyncIterator[Entry | None]:
    """The call's events after ``after``; None each keep-alive period without one.

    Stops after ``call.ended``, or once the stream is exhausted for a call whose record says it has
    ended (its stream may have been trimmed or may never have received the event).
    """
    stream = gateway.bus.keys.events(call_id)
    loop = asyncio.get_running_loop()
    block_ms = max(1, min(int(gateway.keepalive_s * 1000), MAX_BLOCK_MS))
    ended = await _has_ended(gateway, call_id)
    keepalive_due = loop.time() + gateway.keepalive_s
    while True:
        reply = await gateway.bus.redis.xread(
            {stream: after}, count=READ_BATCH, block=None if ended else block_ms
        )
        raw_entries = _entries_of(reply)
        if not raw_entries:
            if ended:
                return
            ended = await _has_ended(gateway, call_id)
            if not ended and loop.time() >= keepalive_due:
                keepalive_due = loop.time() + gateway.keepalive_s
                yield None
            continue
        keepalive_due = loop.time() + gateway.keepalive_s
        # The cursor moves past entries this reader cannot decode too, or it would read them forever.
        after = as_str(raw_entries[-1][0])
        for entry in gateway.bus.decode_entries(stream, raw_entries):
            yield entry
            if entry.message.TYPE == CallEnded.TYPE:
                return


async def _has_ended(gateway: Gateway, call_id: str) -> bool:
    try:
        return is_ended(await gateway.record(call_id))
    except GatewayError:  # the record expired: the call is long over
        return True


def _entries_of(reply: Any) -> list[Any]:
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    entries: list[Any] = []
    for _stream, stream_entries in items:
        entries.extend(stream_entries)
    return entries


async def sse_body(gateway: Gateway, call_id: str, after: str) -> AsyncIterator[str]:
    EVENT_STREAMS.labels("sse").inc()
    try:
        yield f"retry: {SSE_RETRY_MS}\n\n"
        async for entry in follow(gateway, call_id, after):
            yield KEEPALIVE_COMMENT if entry is None else sse_event(entry)
    finally:
        EVENT_STREAMS.labels("sse").dec()
