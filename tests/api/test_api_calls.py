"""POST /call, GET /calls and GET /calls/{id} against the app on a real Redis."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from api_helpers import GUIDE_BODY, client_for, make_call, register, register_every_role

from activecall.api.app import create_app
from activecall.bus import Bus
from activecall.config import Config, RedisSettings
from activecall.messages import CallStateChanged, Originate
from activecall.store import CallStore
from activecall.testing.redis_server import free_port


async def originates(bus: Bus) -> list[Originate]:
    entries = await bus.read({bus.keys.originate(): "0"})
    assert all(isinstance(e.message, Originate) for e in entries)
    return [e.message for e in entries if isinstance(e.message, Originate)]


async def test_post_call_queues_an_originate_and_writes_a_record_without_the_password(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    await register_every_role(bus)
    body = {
        **GUIDE_BODY,
        "caller": "sip:+15550100@yourdomain.pstn.twilio.com",
        "headers": {"X-Campaign": "spring"},
        "variables": {"customer_name": "Sam"},
        "ring_timeout": 25,
    }
    response = await client.post("/call", json=body)
    assert response.status_code == 201
    created = response.json()
    call_id = created["call_id"]
    assert len(call_id) == 32 and int(call_id, 16) >= 0
    assert created == {"call_id": call_id, "state": "queued", "location": f"/calls/{call_id}"}
    assert response.headers["location"] == f"/calls/{call_id}"

    (originate,) = await originates(bus)
    assert (originate.call_id, originate.callee, originate.caller, originate.playbook) == (
        call_id,
        "sip:+18005551234@yourdomain.pstn.twilio.com",
        "sip:+15550100@yourdomain.pstn.twilio.com",
        "sales.md",
    )
    assert (originate.username, originate.password, originate.realm) == (
        "active-call",
        "strongpassword",
        "yourdomain.pstn.twilio.com",
    )
    assert originate.enable_srtp is True
    assert originate.headers == {"X-Campaign": "spring"}
    assert originate.variables == {"customer_name": "Sam"}
    assert originate.ring_timeout == 25.0

    groups = await bus.redis.xinfo_groups(bus.keys.originate())
    assert [g["name"] for g in groups] == [b"sip-edge"]

    record = await CallStore(bus.redis, bus.keys).get(call_id)
    assert record is not None
    assert (record.state, record.direction, record.callee, record.caller, record.playbook) == (
        "queued",
        "outbound",
        "sip:+18005551234@yourdomain.pstn.twilio.com",
        "sip:+15550100@yourdomain.pstn.twilio.com",
        "sales.md",
    )
    assert record.variables == {"customer_name": "Sam"}
    raw = await bus.redis.hgetall(bus.keys.call(call_id))
    assert not any(b"strongpassword" in value for value in raw.values())
    assert await bus.redis.smembers(bus.keys.calls_active()) == {call_id.encode()}

    events = await bus.read({bus.keys.events(call_id): "0"})
    assert [type(e.message) for e in events] == [CallStateChanged]
    assert isinstance(events[0].message, CallStateChanged) and events[0].message.state == "queued"


@pytest.mark.parametrize(
    ("sip", "expected"),
    [({"enableSrtp": False}, False), ({"enable_srtp": True}, True), ({}, None)],
)
async def test_both_spellings_of_enable_srtp_reach_the_edge(
    client: httpx.AsyncClient, bus: Bus, sip: dict[str, bool], expected: bool | None
) -> None:
    await register_every_role(bus)
    response = await client.post(
        "/call", json={"callee": "tel:+4930123456", "playbook": "sales.md", "sip": sip}
    )
    assert response.status_code == 201
    (originate,) = await originates(bus)
    assert originate.enable_srtp is expected
    assert originate.ring_timeout == 60.0


def with_(**changes: Any) -> dict[str, Any]:
    body = {**GUIDE_BODY, **changes}
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        (with_(callee="mailto:bob@example.com"), ["body", "callee"], "must be a sip:, sips: or tel: URI"),
        (with_(callee="sip:bob@exa mple.com"), ["body", "callee"], "malformed host"),
        (with_(callee="sip:bob@example.com\r\nVia: x"), ["body", "callee"], "malformed host"),
        (with_(callee="sip:bob@example.com:99999"), ["body", "callee"], "malformed port"),
        (with_(callee="sip:[::1]x"), ["body", "callee"], "malformed host"),
        (
            with_(callee="sip:18005551234@yourdomain.pstn.twilio.com"),
            ["body", "callee"],
            "E.164 number (+ and 8 to 15 digits)",
        ),
        (with_(callee="sip:+1800@yourdomain.pstn.twilio.com"), ["body", "callee"], "E.164"),
        (with_(callee="tel:5551234"), ["body", "callee"], "needs a +number"),
        (with_(playbook=None), ["body", "playbook"], "Field required"),
        (
            with_(playbook="nope.md"),
            ["body", "playbook"],
            "playbook 'nope.md' is not in any playbook directory",
        ),
        (with_(playbook="../sales.md"), ["body", "playbook"], "file name"),
        (with_(playbook="sub/sales.md"), ["body", "playbook"], "file name"),
        (with_(caller="+15550100"), ["body", "caller"], "must be a sip:, sips: or tel: URI"),
        (with_(ring_timeout=0), ["body", "ring_timeout"], "greater than or equal to 1"),
        (with_(ring_timeout=301), ["body", "ring_timeout"], "less than or equal to 300"),
        (with_(headers={"Via": "x"}), ["body", "headers", "Via", "[key]"], "only X- headers"),
        (with_(headers={"X-A": "1\r\nVia: x"}), ["body", "headers", "X-A"], "control characters"),
        (with_(sip={"enableSRTP": True}), ["body", "sip", "enableSRTP"], "Extra inputs are not permitted"),
        (with_(playbok="sales.md"), ["body", "playbok"], "Extra inputs are not permitted"),
    ],
)
async def test_invalid_requests_are_422_naming_the_field(
    client: httpx.AsyncClient, bus: Bus, body: dict[str, Any], loc: list[str], message: str
) -> None:
    await register_every_role(bus)
    response = await client.post("/call", json=body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [e["loc"] for e in errors] == [loc]
    assert message in errors[0]["msg"]
    assert await originates(bus) == []
    assert await bus.redis.smembers(bus.keys.calls_active()) == set()


@pytest.mark.parametrize(
    ("callee"),
    [
        "sip:+18005551234@yourdomain.pstn.twilio.com",
        "sips:+447700900123@yourdomain.pstn.twilio.com:5061;transport=tls",
        "sip:alice@192.0.2.10:5080",
        "sip:[2001:db8::1]",
        "sip:1000;phone-context=example@pbx.example.com;user=phone",
        "tel:+1-800-555-1234",
        "tel:7042;phone-context=example.com",
    ],
)
async def test_valid_callees_are_accepted(client: httpx.AsyncClient, bus: Bus, callee: str) -> None:
    await register_every_role(bus)
    response = await client.post("/call", json=with_(callee=callee))
    assert response.status_code == 201, response.text
    (originate,) = await originates(bus)
    assert originate.callee == callee


@pytest.mark.parametrize(
    ("workers", "detail"),
    [
        ([], "no live sip-edge worker with free capacity"),
        ([("sip-edge", {})], "no live media worker with free capacity"),
        ([("media", {})], "no live sip-edge worker with free capacity"),
        ([("sip-edge", {}), ("media", {"load": 10, "capacity": 10})], "no live media worker"),
        ([("sip-edge", {"draining": True}), ("media", {})], "no live sip-edge worker"),
        ([("sip-edge", {"age_s": 30.0}), ("media", {})], "no live sip-edge worker"),
        ([("sip-edge", {}), ("media", {}), ("asr", {}), ("tts", {})], "no live llm worker"),
        (
            [("sip-edge", {}), ("media", {}), ("asr", {"load": 8, "capacity": 8}), ("llm", {}), ("tts", {})],
            "no live asr worker",
        ),
    ],
)
async def test_no_capacity_is_503_with_retry_after(
    client: httpx.AsyncClient, bus: Bus, workers: list[tuple[str, dict[str, Any]]], detail: str
) -> None:
    for i, (role, options) in enumerate(workers):
        await register(bus, role, f"w{i}", **options)
    response = await client.post("/call", json=GUIDE_BODY)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert detail in response.json()["detail"]
    assert await originates(bus) == []
    assert await bus.redis.smembers(bus.keys.calls_active()) == set()


async def test_redis_down_is_503(config: Config, tmp_path: object) -> None:
    config.redis = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    dead = Bus.from_settings(config.redis)
    try:
        async with client_for(create_app(config, dead)) as client:
            response = await client.post("/call", json=GUIDE_BODY)
            listing = await client.get("/calls")
    finally:
        await dead.close()
    assert (response.status_code, response.json()) == (503, {"detail": "redis unreachable"})
    assert response.headers["retry-after"] == "5"
    assert listing.status_code == 503


async def test_list_calls_with_a_state_filter(client: httpx.AsyncClient, bus: Bus) -> None:
    await make_call(bus, "c1", state="answered", created=100.0)
    await make_call(bus, "c2", state="ringing", created=50.0, edge="edge-2", media_worker="")
    await make_call(bus, "c3", state="answered", created=200.0)
    await CallStore(bus.redis, bus.keys).finish("c3", reason="bye")
    response = await client.get("/calls")
    assert response.status_code == 200
    calls = response.json()["calls"]
    assert [c["call_id"] for c in calls] == ["c2", "c1"]
    assert calls[0] == {
        "call_id": "c2",
        "state": "ringing",
        "direction": "inbound",
        "caller": "sip:+15550001@trunk.example",
        "callee": "sip:+15550002@gw.example",
        "playbook": "sales.md",
        "edge": "edge-2",
        "media_worker": "",
        "created": 50.0,
        "answered": 0.0,
        "ended": 0.0,
    }
    answered = await client.get("/calls", params={"state": "answered"})
    assert [c["call_id"] for c in answered.json()["calls"]] == ["c1"]
    assert (await client.get("/calls", params={"state": "ended"})).json() == {"calls": []}


async def test_call_details_have_variables_timings_and_transcript(
    client: httpx.AsyncClient, bus: Bus
) -> None:
    store = CallStore(bus.redis, bus.keys)
    await make_call(bus, "c1", created=10.0, answered=11.0, variables={"X-Twilio-CallSid": "CA1"})
    await store.set_timings("c1", {"answer": 0.5})
    await store.append_transcript("c1", "agent", "Hello", at=12.0)
    await store.append_transcript("c1", "caller", "Hi", at=13.0)
    response = await client.get("/calls/c1")
    assert response.status_code == 200
    details = response.json()
    assert details["variables"] == {"X-Twilio-CallSid": "CA1"}
    assert details["timings"] == {"answer": 0.5}
    assert details["transcript"] == [
        {"speaker": "agent", "text": "Hello", "at": 12.0},
        {"speaker": "caller", "text": "Hi", "at": 13.0},
    ]
    assert (details["state"], details["answered"], details["end_reason"]) == ("answered", 11.0, "")


async def test_unknown_call_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/calls/nope")
    assert (response.status_code, response.json()) == (404, {"detail": "unknown call"})
    bad = await client.get("/calls/a{b}")
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["path", "call_id"]
