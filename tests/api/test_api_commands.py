"""Commands on a call: each becomes one bus message on the stream of the process that owns it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_helpers import make_call

from activecall.bus import Bus
from activecall.messages import Hangup, Message, PlayAudio, SayText, SendDtmf, StopPlayback, Transfer
from activecall.store import CallStore


async def only_message(bus: Bus, stream: str) -> Message:
    entries = await bus.read({stream: "0"})
    assert len(entries) == 1, entries
    return entries[0].message


async def test_hangup_goes_to_the_owning_edge(client: httpx.AsyncClient, bus: Bus) -> None:
    await make_call(bus, "c1", edge="edge-7")
    response = await client.post("/calls/c1/hangup")
    assert (response.status_code, response.json()) == (202, {"ok": True, "command": "hangup"})
    message = await only_message(bus, bus.keys.edge_control("edge-7"))
    assert isinstance(message, Hangup)
    assert (message.call_id, message.reason, message.by) == ("c1", "api", "api")
    with_reason = await client.post("/calls/c1/hangup", json={"reason": "operator"})
    assert with_reason.status_code == 202
    entries = await bus.read({bus.keys.edge_control("edge-7"): "0"})
    assert isinstance(entries[1].message, Hangup) and entries[1].message.reason == "operator"


async def test_transfer_goes_to_the_owning_edge(client: httpx.AsyncClient, bus: Bus) -> None:
    await make_call(bus, "c1", edge="edge-7")
    target = "sip:+18005550100@yourdomain.pstn.twilio.com"
    response = await client.post("/calls/c1/transfer", json={"target": target})
    assert response.status_code == 202
    message = await only_message(bus, bus.keys.edge_control("edge-7"))
    assert isinstance(message, Transfer) and (message.call_id, message.target) == ("c1", target)
    bad = await client.post("/calls/c1/transfer", json={"target": "sip:1800@x.pstn.twilio.com"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "target"]


async def test_say_is_one_whole_turn_on_the_say_stream(client: httpx.AsyncClient, bus: Bus) -> None:
    await make_call(bus, "c1")
    response = await client.post("/calls/c1/say", json={"text": "One moment, please."})
    assert response.status_code == 202
    turn_id = response.json()["turn_id"]
    assert len(turn_id) == 32
    message = await only_message(bus, bus.keys.say("c1"))
    assert isinstance(message, SayText)
    assert (message.call_id, message.turn_id, message.seq, message.text, message.last) == (
        "c1",
        turn_id,
        0,
        "One moment, please.",
        True,
    )


@pytest.mark.parametrize(
    ("command", "body", "expected"),
    [
        ("interrupt", None, StopPlayback(call_id="c1")),
        ("dtmf", {"digits": "12#a"}, SendDtmf(call_id="c1", digits="12#A", duration_ms=160)),
        ("dtmf", {"digits": "9", "duration_ms": 400}, SendDtmf(call_id="c1", digits="9", duration_ms=400)),
        ("play", {"file": "prompts/hold.wav"}, PlayAudio(call_id="c1", path_or_url="prompts/hold.wav")),
        (
            "play",
            {"url": "https://cdn.example.com/hold.wav"},
            PlayAudio(call_id="c1", path_or_url="https://cdn.example.com/hold.wav"),
        ),
    ],
)
async def test_media_commands_go_to_the_media_worker(
    client: httpx.AsyncClient, bus: Bus, command: str, body: dict[str, Any] | None, expected: Message
) -> None:
    await make_call(bus, "c1", media_worker="media-3")
    response = await client.post(f"/calls/c1/{command}", json=body)
    assert response.status_code == 202, response.text
    message = await only_message(bus, bus.keys.media_control("media-3"))
    message.ts = expected.ts = 0.0
    if isinstance(message, PlayAudio):
        assert message.turn_id == response.json()["turn_id"]
        message.turn_id = ""
    assert message == expected


@pytest.mark.parametrize(
    ("command", "body", "loc"),
    [
        ("play", {"file": "../../etc/passwd"}, ["body", "file"]),
        ("play", {"file": "/etc/passwd"}, ["body", "file"]),
        ("play", {"file": "a.wav", "url": "https://x.example/a.wav"}, ["body"]),
        ("play", {}, ["body"]),
        ("play", {"url": "file:///etc/passwd"}, ["body", "url"]),
        ("dtmf", {"digits": "12x"}, ["body", "digits"]),
        ("dtmf", {"digits": "1", "duration_ms": 10}, ["body", "duration_ms"]),
        ("say", {"text": ""}, ["body", "text"]),
    ],
)
async def test_invalid_command_bodies_are_422(
    client: httpx.AsyncClient, bus: Bus, command: str, body: dict[str, Any], loc: list[str]
) -> None:
    await make_call(bus, "c1")
    response = await client.post(f"/calls/c1/{command}", json=body)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [loc]
    assert await bus.read({bus.keys.media_control("media-1"): "0", bus.keys.say("c1"): "0"}) == []


COMMANDS = [
    ("hangup", None),
    ("transfer", {"target": "tel:+18005550100"}),
    ("say", {"text": "hi"}),
    ("interrupt", None),
    ("dtmf", {"digits": "1"}),
    ("play", {"file": "a.wav"}),
]


@pytest.mark.parametrize(("command", "body"), COMMANDS)
async def test_commands_on_an_unknown_call_are_404(
    client: httpx.AsyncClient, command: str, body: dict[str, Any] | None
) -> None:
    response = await client.post(f"/calls/nope/{command}", json=body)
    assert (response.status_code, response.json()) == (404, {"detail": "unknown call"})


@pytest.mark.parametrize(("command", "body"), COMMANDS)
async def test_commands_on_an_ended_call_are_409(
    client: httpx.AsyncClient, bus: Bus, command: str, body: dict[str, Any] | None
) -> None:
    await make_call(bus, "c1")
    await CallStore(bus.redis, bus.keys).finish("c1", reason="bye")
    response = await client.post(f"/calls/c1/{command}", json=body)
    assert (response.status_code, response.json()) == (409, {"detail": "call has ended"})


@pytest.mark.parametrize(
    ("command", "body", "detail"),
    [
        ("hangup", None, "call not yet placed"),
        ("transfer", {"target": "tel:+18005550100"}, "call not yet placed"),
        ("interrupt", None, "call has no media yet"),
        ("dtmf", {"digits": "1"}, "call has no media yet"),
        ("play", {"file": "a.wav"}, "call has no media yet"),
    ],
)
async def test_commands_before_the_call_is_placed_are_409(
    client: httpx.AsyncClient, bus: Bus, command: str, body: dict[str, Any] | None, detail: str
) -> None:
    await make_call(bus, "c1", state="queued", edge="", media_worker="")
    response = await client.post(f"/calls/c1/{command}", json=body)
    assert (response.status_code, response.json()) == (409, {"detail": detail})
