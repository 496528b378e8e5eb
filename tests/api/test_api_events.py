"""Live events of a call: Server-Sent Events with resume, and the WebSocket with commands."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from api_helpers import TOKEN, LiveServer, make_call
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from activecall.api.app import create_app
from activecall.bus import Bus
from activecall.cli import parse_sse
from activecall.config import Config
from activecall.messages import CallAnswered, CallEnded, Hangup, Probe, SayText, TranscriptFinal
from activecall.store import CallStore


async def emit_call(bus: Bus, call_id: str = "c1") -> list[str]:
    """A short call on the events stream; returns the entry ids."""
    return [
        await bus.emit(
            call_id,
            CallAnswered(
                direction="inbound", caller="sip:a@b.example", callee="sip:c@d.example", ts=1700000000.5
            ),
        ),
        await bus.emit(call_id, TranscriptFinal(text="hello there", confidence=0.5, ts=1700000001.25)),
        await bus.emit(call_id, Probe(seq=1, payload=b"\x00\x01\xff", ts=1700000002.0)),
        await bus.emit(call_id, CallEnded(reason="bye", by="caller", status=200, ts=1700000003.0)),
    ]


def sse_events(ids: list[str]) -> list[str]:
    return [
        f"id: {ids[0]}\nevent: call.answered\n"
        'data: {"call_id":"c1","ts":1700000000.5,"direction":"inbound","caller":"sip:a@b.example",'
        '"callee":"sip:c@d.example","playbook":"","sample_rate":8000}\n\n',
        f"id: {ids[1]}\nevent: transcript.final\n"
        'data: {"call_id":"c1","ts":1700000001.25,"text":"hello there","start_ms":0,"end_ms":0,'
        '"confidence":0.5,"utterance":0,"speech_end_ms":0,"decided_ts":0.0,"eot":"","p_finished":null,"reply_at_ms":0}\n\n',
        f"id: {ids[2]}\nevent: probe\n"
        'data: {"call_id":"c1","ts":1700000002.0,"seq":1,"payload":"AAH/","worker":""}\n\n',
        f"id: {ids[3]}\nevent: call.ended\n"
        'data: {"call_id":"c1","ts":1700000003.0,"reason":"bye","by":"caller","status":200}\n\n',
    ]


RETRY = "retry: 2000\n\n"


async def test_sse_sends_the_whole_call_from_its_start(client: httpx.AsyncClient, bus: Bus) -> None:
    await make_call(bus, "c1")
    ids = await emit_call(bus)
    response = await client.get("/calls/c1/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.text == RETRY + "".join(sse_events(ids))


async def test_sse_resumes_after_last_event_id(client: httpx.AsyncClient, bus: Bus) -> None:
    await make_call(bus, "c1")
    ids = await emit_call(bus)
    expected = sse_events(ids)
    by_header = await client.get("/calls/c1/events", headers={"Last-Event-ID": ids[1]})
    assert by_header.text == RETRY + expected[2] + expected[3]
    by_query = await client.get("/calls/c1/events", params={"last_event_id": ids[0]})
    assert by_query.text == RETRY + "".join(expected[1:])
    both = await client.get(
        "/calls/c1/events", params={"last_event_id": ids[0]}, headers={"Last-Event-ID": ids[2]}
    )
    assert both.text == RETRY + expected[3]


async def test_sse_refuses_a_malformed_last_event_id_and_an_unknown_call(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    await make_call(bus, "c1")
    bad = await client.get("/calls/c1/events", headers={"Last-Event-ID": "$"})
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["detail"]] == [["header", "Last-Event-ID"]]
    unknown = await client.get("/calls/nope/events")
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "unknown call"})


async def test_sse_skips_entries_it_cannot_decode(client: httpx.AsyncClient, bus: Bus) -> None:
    await make_call(bus, "c1")
    stream = bus.keys.events("c1")
    first = await bus.emit("c1", TranscriptFinal(text="one", ts=1.0))
    await bus.redis.xadd(stream, {b"m": b"\xc1"})
    await bus.redis.xadd(stream, {b"m": b"\x82\xa1v\x01\xa4type\xa6future"})
    last = await bus.emit("c1", CallEnded(reason="bye", ts=2.0))
    response = await client.get("/calls/c1/events")
    assert [(i, e) for i, e, _ in parse_sse(response.text.splitlines())] == [
        (first, "transcript.final"),
        (last, "call.ended"),
    ]


async def test_sse_of_an_ended_call_without_call_ended_stops_at_the_end_of_the_stream(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    await make_call(bus, "c1")
    only = await bus.emit("c1", TranscriptFinal(text="one", ts=1.0))
    await CallStore(bus.redis, bus.keys).finish("c1", reason="timeout")
    response = await client.get("/calls/c1/events")
    assert [(i, e) for i, e, _ in parse_sse(response.text.splitlines())] == [(only, "transcript.final")]


async def test_sse_follows_a_live_call_with_keep_alives(config: Config, bus: Bus) -> None:
    await make_call(bus, "c1")
    app = create_app(config, bus, keepalive_s=0.05)
    lines: list[str] = []
    ended_id = ""
    async with (
        LiveServer(app) as server,
        httpx.AsyncClient(base_url=server.url) as client,
        client.stream("GET", "/calls/c1/events") as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            lines.append(line)
            if line == ": keep-alive" and not ended_id:
                ended_id = await bus.emit("c1", CallEnded(reason="bye", ts=5.0))
    assert lines[:2] == ["retry: 2000", ""]
    events = list(parse_sse(lines))
    assert events == [(ended_id, "call.ended", '{"call_id":"c1","ts":5.0,"reason":"bye","by":"","status":0}')]


async def test_websocket_sends_events_and_takes_commands(config: Config, bus: Bus) -> None:
    await make_call(bus, "c1", edge="edge-1")
    first = await bus.emit("c1", TranscriptFinal(text="hi", ts=1.0))
    async with (
        LiveServer(create_app(config, bus)) as server,
        connect(f"ws://127.0.0.1:{server.port}/calls/c1/ws") as ws,
    ):
        assert json.loads(await ws.recv()) == {
            "id": first,
            "event": "transcript.final",
            "data": {
                "call_id": "c1",
                "ts": 1.0,
                "text": "hi",
                "start_ms": 0,
                "end_ms": 0,
                "confidence": 0.0,
                "utterance": 0,
                "speech_end_ms": 0,
                "decided_ts": 0.0,
                "eot": "",
                "p_finished": None,
                "reply_at_ms": 0,
            },
        }
        await ws.send(json.dumps({"command": "say", "text": "Hello there."}))
        reply = json.loads(await ws.recv())
        assert reply == {"ok": True, "command": "say", "turn_id": reply["turn_id"]}
        (said,) = await bus.read({bus.keys.say("c1"): "0"})
        assert isinstance(said.message, SayText)
        assert (said.message.text, said.message.turn_id) == ("Hello there.", reply["turn_id"])

        for request, answer in [
            ("nonsense", {"ok": False, "status": 400, "error": "not JSON"}),
            ("[1]", {"ok": False, "status": 400, "error": "a command is a JSON object"}),
            (
                '{"command": "dance"}',
                {
                    "ok": False,
                    "status": 400,
                    "error": "unknown command; known: hangup, transfer, say, interrupt, dtmf, play",
                },
            ),
        ]:
            await ws.send(request)
            assert json.loads(await ws.recv()) == answer
        await ws.send(json.dumps({"command": "dtmf", "digits": "x"}))
        invalid = json.loads(await ws.recv())
        assert (invalid["ok"], invalid["status"], invalid["error"]) == (False, 422, "invalid command")
        assert invalid["detail"][0]["loc"] == ["digits"]

        await ws.send(json.dumps({"command": "hangup", "reason": "done"}))
        assert json.loads(await ws.recv()) == {"ok": True, "command": "hangup"}
        (hangup,) = await bus.read({bus.keys.edge_control("edge-1"): "0"})
        assert isinstance(hangup.message, Hangup) and hangup.message.reason == "done"

        ended = await bus.emit("c1", CallEnded(reason="bye", ts=2.0))
        event = json.loads(await ws.recv())
        assert (event["id"], event["event"]) == (ended, "call.ended")
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
        assert ws.close_code == 1000


async def test_websocket_resumes_and_reports_an_ended_call(config: Config, bus: Bus) -> None:
    await make_call(bus, "c1")
    ids = await emit_call(bus)
    async with LiveServer(create_app(config, bus)) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/calls/c1/ws?last_event_id={ids[2]}") as ws:
            assert json.loads(await ws.recv())["id"] == ids[3]
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()
        async with connect(f"ws://127.0.0.1:{server.port}/calls/nope/ws") as ws:
            assert json.loads(await ws.recv()) == {"ok": False, "status": 404, "error": "unknown call"}
            with pytest.raises(ConnectionClosedError):
                await ws.recv()
            assert ws.close_code == 4404


async def test_websocket_needs_the_token_when_tokens_are_configured(token_config: Config, bus: Bus) -> None:
    await make_call(bus, "c1")
    async with LiveServer(create_app(token_config, bus)) as server:
        url = f"ws://127.0.0.1:{server.port}/calls/c1/ws"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 403
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with connect(url, additional_headers=headers) as ws:
            await bus.emit("c1", CallEnded(reason="bye", ts=2.0))
            assert json.loads(await ws.recv())["event"] == "call.ended"


async def test_sse_stays_open_on_a_quiet_call_longer_than_the_redis_socket_timeout(
    config: Config, bus: Bus
) -> None:
    """redis-py gives up on a read after 5 s; a 15 s keep-alive must not be one blocking XREAD."""
    await make_call(bus, "c1")
    app = create_app(config, bus, keepalive_s=15.0)
    async with (
        LiveServer(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as client,
        client.stream("GET", "/calls/c1/events") as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert [await anext(lines), await anext(lines)] == ["retry: 2000", ""]
        await asyncio.sleep(7.0)  # nothing happens on the call for longer than the socket timeout
        ended_id = await bus.emit("c1", CallEnded(reason="bye", ts=5.0))
        rest = [line async for line in lines]
    assert list(parse_sse(rest)) == [
        (ended_id, "call.ended", '{"call_id":"c1","ts":5.0,"reason":"bye","by":"","status":0}')
    ]
