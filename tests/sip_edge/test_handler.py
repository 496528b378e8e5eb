"""Inbound handlers: playbook rules, and the webhook with its fallback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sip_harness import WebhookServer

from activecall.config import Handler, HandlerRule
from activecall.sip_edge.app.handler import (
    CallInfo,
    Decision,
    HandlerError,
    PlaybookHandler,
    WebhookHandler,
    parse_webhook_answer,
)

CALL = CallInfo(
    call_id="c1",
    caller="+14155550100",
    callee="+15550001111",
    from_uri="sip:+14155550100@sip.twilio.com",
    to_uri="sip:+15550001111@edge.example.com",
    request_uri="sip:+15550001111@edge.example.com",
    source="54.172.60.1:5060",
    transport="TLS",
    sip_call_id="abc@0.0.0.0",
    headers={"X-Twilio-CallSid": "CA123"},
)


async def test_the_first_matching_rule_names_the_playbook() -> None:
    handler = PlaybookHandler(
        Handler(
            default="greeting.md",
            rules=[
                HandlerRule(playbook="uk.md", caller=r"^\+44"),
                HandlerRule(playbook="sales.md", callee=r"^\+1555000111[0-9]$", caller=r"^\+1415"),
                HandlerRule(playbook="never.md", callee=r"^\+1555"),
            ],
        )
    )
    assert await handler.decide(CALL) == Decision(playbook="sales.md", source="rule")
    other = CallInfo(**{**CALL.to_json(), "caller": "+33100000000", "callee": "+33999"})
    assert await handler.decide(other) == Decision(playbook="greeting.md", source="default")


@pytest.mark.parametrize(
    ("answer", "decision"),
    [
        (
            {"playbook": "a.md", "variables": {"n": 1}},
            Decision(playbook="a.md", variables={"n": "1"}, source="webhook"),
        ),
        ({"reject": 486}, Decision(reject_code=486, source="webhook")),
        (
            {"reject": True, "code": 603, "reason": "Decline"},
            Decision(reject_code=603, reject_reason="Decline", source="webhook"),
        ),
        ({"reject": True, "code": 200}, Decision(reject_code=603, source="webhook")),
        ({"reject": False, "playbook": "b.md"}, Decision(playbook="b.md", source="webhook")),
    ],
)
def test_webhook_answers(answer: dict[str, Any], decision: Decision) -> None:
    assert parse_webhook_answer(answer) == decision


@pytest.mark.parametrize(
    "answer", [[], {"variables": {}}, {"playbook": ""}, {"playbook": "a.md", "variables": []}]
)
def test_unusable_webhook_answers_raise(answer: Any) -> None:
    with pytest.raises(HandlerError):
        parse_webhook_answer(answer)


async def test_the_webhook_gets_the_call_as_json() -> None:
    async def answer(body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"playbook": "vip.md", "variables": {"tier": "gold"}}

    async with WebhookServer(answer) as server:
        handler = WebhookHandler(Handler(type="webhook", url=server.url))
        try:
            decision = await handler.decide(CALL)
        finally:
            await handler.close()
    assert decision == Decision(playbook="vip.md", variables={"tier": "gold"}, source="webhook")
    assert server.requests == [CALL.to_json()]


@pytest.mark.parametrize("failure", ["timeout", "status", "garbage"])
async def test_a_failing_webhook_falls_back(failure: str) -> None:
    async def answer(body: dict[str, Any]) -> tuple[int, Any]:
        if failure == "timeout":
            await asyncio.sleep(2)
        return (503, {"error": "busy"}) if failure == "status" else (200, "not an object")

    async with WebhookServer(answer) as server:
        with_fallback = WebhookHandler(
            Handler(type="webhook", url=server.url, timeout=0.2, fallback="safe.md")
        )
        without = WebhookHandler(
            Handler(type="webhook", url=server.url, timeout=0.2, fallback_reject_code=480)
        )
        try:
            assert await with_fallback.decide(CALL) == Decision(playbook="safe.md", source="fallback")
            assert await without.decide(CALL) == Decision(reject_code=480, source="fallback")
        finally:
            await with_fallback.close()
            await without.close()
