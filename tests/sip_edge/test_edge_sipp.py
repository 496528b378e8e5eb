"""The edge against SIPp over UDP: real sockets, a real Redis, the fake media worker."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Any

from sip_harness import SCENARIOS, EdgeFactory, EdgeHarness, WebhookServer, poll

from activecall.config import Handler
from activecall.messages import (
    CallAnswered,
    CallEnded,
    CallStateChanged,
    Hangup,
    Message,
    Originate,
    SessionStart,
    Transfer,
)
from activecall.store import CallRecord
from activecall.testing.sipp import Sipp, SippResult

CALLEE = "+15550001111"


async def test_inbound_call_is_answered_recorded_and_hung_up_by_the_caller(
    start_edge: EdgeFactory, tmp_path: Path
) -> None:
    harness = await start_edge()
    sipp = Sipp(
        SCENARIOS / "uac_call.xml",
        tmp_path,
        remote=harness.target(),
        pause_ms=300,
        extra=["-s", CALLEE],
    )
    result = await asyncio.to_thread(sipp.run)
    assert result.ok, result.describe()

    async with asyncio.timeout(5):
        await harness.responder.wait_for(lambda: harness.responder.closed == 1)
    (leg,) = harness.responder.legs.values()
    assert leg.srtp is False
    (update,) = leg.updates
    assert (update.remote_address, update.remote_port) == ("127.0.0.1", sipp.media_port)
    assert (update.codec, update.payload_type, update.telephone_event_pt, update.direction) == (
        "PCMU",
        0,
        101,
        "sendrecv",
    )

    call_id = leg.call_id
    await asyncio.wait_for(_until_ended(harness, call_id), 5)
    events = await harness.events(call_id)
    states = [(e.previous, e.state) for e in events if isinstance(e, CallStateChanged)]
    assert states == [("new", "ringing"), ("ringing", "answered"), ("answered", "ended")]
    answered = next(e for e in events if isinstance(e, CallAnswered))
    assert (answered.direction, answered.caller, answered.callee) == ("inbound", "+14155550100", CALLEE)
    ended = next(e for e in events if isinstance(e, CallEnded))
    assert (ended.reason, ended.by) == ("remote hangup", "remote")

    for role in ("asr", "llm", "tts"):
        (start,) = await harness.sessions(role)
        assert isinstance(start, SessionStart)
        assert (start.call_id, start.role, start.playbook) == (call_id, role, "greeting.md")
        assert start.variables["X-Twilio-CallSid"] == "CA1"
        assert start.variables["Diversion"] == f"<sip:{CALLEE}@twilio.com>;reason=unconditional"
        assert start.variables["User-Agent"] == "Twilio Gateway"
        assert (start.variables["caller"], start.variables["callee"]) == ("+14155550100", CALLEE)

    record = await harness.edge.store.get(call_id)
    assert (record.state, record.direction, record.end_reason, record.media_worker) == (
        "ended",
        "inbound",
        "remote hangup",
        "media-test",
    )
    assert await harness.edge.store.active_ids() == []


async def _until_ended(harness: EdgeHarness, call_id: str) -> None:
    await wait_event(harness, call_id, CallEnded)


async def wait_event(harness: EdgeHarness, call_id: str, kind: type[Message], within: float = 10.0) -> Any:
    """The first event of ``kind`` on the call's stream, polling until it comes."""
    async with asyncio.timeout(within):
        while True:
            for event in await harness.events(call_id):
                if isinstance(event, kind):
                    return event
            await asyncio.sleep(0.02)


def states(events: list[Message]) -> list[str]:
    return [e.state for e in events if isinstance(e, CallStateChanged)]


async def test_caller_cancels_while_the_webhook_thinks(start_edge: EdgeFactory, tmp_path: Path) -> None:
    async def slow(body: dict[str, Any]) -> tuple[int, Any]:
        await asyncio.sleep(3)
        return 200, {"playbook": "late.md"}

    async with WebhookServer(slow) as webhook:
        harness = await start_edge(handler=Handler(type="webhook", url=webhook.url, timeout=5.0))
        sipp = Sipp(
            SCENARIOS / "uac_cancel.xml",
            tmp_path,
            remote=harness.target(),
            pause_ms=300,
            extra=["-s", CALLEE],
        )
        result = await asyncio.to_thread(sipp.run)
        assert result.ok, result.describe()
        (asked,) = webhook.requests
    assert (asked["caller"], asked["callee"], asked["direction"]) == ("+14155550100", CALLEE, "inbound")
    assert asked["headers"]["CSeq"] == "1 INVITE"
    call_id = asked["call_id"]
    ended = await wait_event(harness, call_id, CallEnded)
    assert (ended.reason, ended.status) == ("cancelled", 487)
    assert states(await harness.events(call_id)) == ["ringing", "cancelled"]
    assert harness.responder.opened == 0
    record = await harness.edge.store.get(call_id)
    assert record.state == "cancelled"


async def test_hold_and_resume_with_reinvites_move_the_leg(start_edge: EdgeFactory, tmp_path: Path) -> None:
    harness = await start_edge()
    sipp = Sipp(
        SCENARIOS / "uac_hold.xml", tmp_path, remote=harness.target(), extra=["-s", CALLEE, "-trace_logs"]
    )
    result = await asyncio.to_thread(sipp.run)
    assert result.ok, result.describe()
    async with asyncio.timeout(5):
        await harness.responder.wait_for(lambda: harness.responder.closed == 1)
    (leg,) = harness.responder.legs.values()
    assert [u.direction for u in leg.updates] == ["sendrecv", "recvonly", "sendrecv"]
    log = await asyncio.to_thread(lambda: next(tmp_path.glob("*_logs.log")).read_text())
    first, held, resumed = (int(v) for v in log.split("answer versions ")[1].split()[:3])
    assert (held, resumed) == (first + 1, first + 2)


def digest_of(header: str, method: str, password: str) -> tuple[str, str]:
    """(the response sent, the response RFC 2617 section 3.2.2 gives for these parameters)."""
    params = dict(re.findall(r'(\w+)="?([^",]+)"?', header.split(" ", 2)[2]))

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{params['username']}:{params['realm']}:{password}")
    ha2 = md5(f"{method}:{params['uri']}")
    expected = md5(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}")
    return params["response"], expected


async def originate_and_hang_up(
    harness: EdgeHarness, uas: Sipp, call_id: str
) -> tuple[CallEnded, SippResult]:
    """Originate a call to the SIPp UAS, wait for the answer, then hang up with a command."""
    try:
        await harness.bus.publish(
            harness.bus.keys.originate(),
            Originate(
                call_id=call_id,
                callee=f"sip:+15550002222@127.0.0.1:{uas.local_port}",
                caller="+14155550100",
                playbook="sales.md",
                username="edgeuser",
                password="s3cret",
                variables={"customer": "Ann"},
            ),
        )
        answered = await wait_event(harness, call_id, CallAnswered)
        assert (answered.direction, answered.caller, answered.callee) == (
            "outbound",
            "+14155550100",
            "+15550002222",
        )
        await harness.bus.publish(
            harness.bus.keys.edge_control("edge-test"), Hangup(call_id=call_id, by="api")
        )
        ended = await wait_event(harness, call_id, CallEnded)
        return ended, await asyncio.to_thread(uas.wait)
    finally:
        uas.kill()


async def test_outbound_call_answers_a_407_challenge_and_hangs_up_on_command(
    start_edge: EdgeFactory, tmp_path: Path
) -> None:
    harness = await start_edge()
    uas = Sipp(SCENARIOS / "uas_proxy_auth.xml", tmp_path).start()
    ended, result = await originate_and_hang_up(harness, uas, "out-407")
    assert result.ok, result.describe()
    headers = {line for line in result.messages.splitlines() if line.startswith("Proxy-Authorization:")}
    (header,) = headers  # retransmissions of the INVITE carry the same credentials
    sent, expected = digest_of(header, "INVITE", "s3cret")
    assert sent == expected
    assert (ended.reason, ended.by) == ("hangup", "api")
    assert states(await harness.events("out-407")) == ["dialing", "answered", "ended"]
    (start,) = await harness.sessions("llm")
    assert (start.playbook, start.variables["customer"], start.variables["callee"]) == (
        "sales.md",
        "Ann",
        "+15550002222",
    )


async def test_outbound_call_answers_a_401_challenge_that_sipp_verifies(
    start_edge: EdgeFactory, tmp_path: Path
) -> None:
    harness = await start_edge()
    uas = Sipp(
        SCENARIOS / "uas_auth_401.xml", tmp_path, keys={"username": "edgeuser", "password": "s3cret"}
    ).start()
    ended, result = await originate_and_hang_up(harness, uas, "out-401")
    assert result.ok, result.describe()
    assert ended.reason == "hangup"  # SIPp answers 403 to a wrong digest: the call would have failed


async def test_transfer_sends_refer_and_hangs_up_after_the_final_notify(
    start_edge: EdgeFactory, tmp_path: Path
) -> None:
    harness = await start_edge()
    uas = Sipp(SCENARIOS / "uas_refer.xml", tmp_path).start()
    try:
        await harness.bus.publish(
            harness.bus.keys.originate(),
            Originate(
                call_id="out-refer",
                callee=f"sip:+15550003333@127.0.0.1:{uas.local_port}",
                caller="+14155550100",
            ),
        )
        await wait_event(harness, "out-refer", CallAnswered)
        control = harness.bus.keys.edge_control("edge-test")
        await harness.bus.publish(control, Transfer(call_id="out-refer", target="+15557770000"))
        ended = await wait_event(harness, "out-refer", CallEnded)
        result = await asyncio.to_thread(uas.wait)
    finally:
        uas.kill()
    assert result.ok, result.describe()
    assert (ended.reason, ended.by) == ("transferred", "transfer")
    assert states(await harness.events("out-refer")) == ["dialing", "answered", "transferring", "ended"]


async def test_early_media_updates_the_leg_before_the_answer(start_edge: EdgeFactory, tmp_path: Path) -> None:
    harness = await start_edge()
    uas = Sipp(SCENARIOS / "uas_early_media.xml", tmp_path).start()
    try:
        callee = f"sip:+15550005555@127.0.0.1:{uas.local_port}"
        await harness.bus.publish(harness.bus.keys.originate(), Originate(call_id="out-early", callee=callee))
        ended = await wait_event(harness, "out-early", CallEnded)
        result = await asyncio.to_thread(uas.wait)
    finally:
        uas.kill()
    assert result.ok, result.describe()
    assert states(await harness.events("out-early")) == ["dialing", "early", "answered", "ended"]
    assert (ended.reason, ended.by) == ("remote hangup", "remote")
    (leg,) = harness.responder.legs.values()
    assert [(u.codec, u.payload_type, u.remote_port) for u in leg.updates] == [
        ("PCMA", 8, uas.media_port)
    ] * 2


async def test_ring_timeout_cancels_the_outbound_call(start_edge: EdgeFactory, tmp_path: Path) -> None:
    harness = await start_edge()
    uas = Sipp(SCENARIOS / "uas_ring_cancel.xml", tmp_path).start()
    try:
        callee = f"sip:+15550006666@127.0.0.1:{uas.local_port}"
        message = Originate(call_id="out-ring", callee=callee, ring_timeout=0.5)
        await harness.bus.publish(harness.bus.keys.originate(), message)
        ended = await wait_event(harness, "out-ring", CallEnded)
        result = await asyncio.to_thread(uas.wait)
    finally:
        uas.kill()
    assert result.ok, result.describe()
    assert (ended.reason, ended.by, ended.status) == ("no answer", "timeout", 487)
    assert states(await harness.events("out-ring")) == ["dialing", "ringing", "failed"]
    assert harness.responder.closed == 1


async def test_an_outbound_call_the_api_queued_goes_on_from_queued(start_edge: EdgeFactory) -> None:
    harness = await start_edge()
    # What the api does before any edge sees the Originate: the record and the event, both "queued".
    record = CallRecord(call_id="out-queued", direction="outbound", state="queued", callee="sip:x@")
    await harness.edge.store.create(record)
    await harness.bus.emit("out-queued", CallStateChanged(state="queued"))
    for call_id in ("out-queued", "out-unqueued"):  # the second has no record: it starts at "new"
        message = Originate(call_id=call_id, callee="sip:x@")  # refused: the URI has no host
        await harness.bus.publish(harness.bus.keys.originate(), message)
        ended = await wait_event(harness, call_id, CallEnded)
        assert (ended.status, ended.reason) == (400, "bad address: Bad host")
    changes = [e for e in await harness.events("out-queued") if isinstance(e, CallStateChanged)]
    assert [(e.previous, e.state) for e in changes] == [
        ("", "queued"),
        ("queued", "dialing"),
        ("dialing", "failed"),
    ]
    changes = [e for e in await harness.events("out-unqueued") if isinstance(e, CallStateChanged)]
    assert [(e.previous, e.state) for e in changes] == [("new", "dialing"), ("dialing", "failed")]


async def test_hangup_while_ringing_cancels_the_outbound_call(
    start_edge: EdgeFactory, tmp_path: Path
) -> None:
    harness = await start_edge()
    uas = Sipp(SCENARIOS / "uas_ring_cancel.xml", tmp_path).start()
    try:
        callee = f"sip:+15550006666@127.0.0.1:{uas.local_port}"
        await harness.bus.publish(harness.bus.keys.originate(), Originate(call_id="out-hup", callee=callee))

        async def ringing() -> bool:
            return "ringing" in states(await harness.events("out-hup"))

        await poll(ringing)
        await harness.bus.publish(
            harness.bus.keys.edge_control("edge-test"), Hangup(call_id="out-hup", by="api")
        )
        ended = await wait_event(harness, "out-hup", CallEnded)
        result = await asyncio.to_thread(uas.wait)
    finally:
        uas.kill()
    assert result.ok, result.describe()
    assert (ended.reason, ended.by, ended.status) == ("hangup", "api", 487)
    assert states(await harness.events("out-hup"))[-1] == "cancelled"
