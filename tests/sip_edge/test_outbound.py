"""Outbound call addressing (the dial plan): callee and caller forms, and whose credentials answer a
challenge."""

from __future__ import annotations

from dataclasses import replace

import pytest

from activecall.config import SipRegistration
from activecall.messages import Originate
from activecall.sip_edge.app.call import SetupFailed
from activecall.sip_edge.app.dialplan import DialPlan
from activecall.sip_edge.sip.syntax.uri import SipUri

TRUNK = SipRegistration(
    name="trunk", username="acct", password="pw", server="trunk.example.com:5080", realm="sip.example.com"
)


def dial_plan(*registrations: SipRegistration) -> DialPlan:
    return DialPlan(list(registrations), "active-call", lambda: "203.0.113.5")


@pytest.mark.parametrize(
    ("callee", "uri", "to"),
    [
        (
            "sip:+15550001111@trunk.pstn.twilio.com;transport=tls",
            "sip:+15550001111@trunk.pstn.twilio.com;transport=tls",
            "<sip:+15550001111@trunk.pstn.twilio.com>",
        ),
        (
            "+15550001111",
            "sip:+15550001111@trunk.example.com:5080",
            "<sip:+15550001111@trunk.example.com:5080>",
        ),
        (
            "tel:+15550001111",
            "sip:+15550001111@trunk.example.com:5080",
            "<sip:+15550001111@trunk.example.com:5080>",
        ),
    ],
)
def test_callee_forms(callee: str, uri: str, to: str) -> None:
    found_uri, from_, found_to = dial_plan(TRUNK).addresses(Originate(callee=callee, caller="+14155550100"))
    assert (str(found_uri), str(found_to)) == (uri, to)
    assert str(from_) == "<sip:+14155550100@203.0.113.5>"


def test_a_bare_number_needs_a_trunk() -> None:
    with pytest.raises(SetupFailed, match="no trunk is configured"):
        dial_plan().addresses(Originate(callee="+15550001111"))


def test_caller_defaults_and_uris_are_kept() -> None:
    plan = dial_plan()
    assert plan.caller_uri("") == "sip:active-call@203.0.113.5"
    assert plan.caller_uri("sips:alice@example.com") == "sips:alice@example.com"


def test_a_trunk_caller_id_is_the_default_and_tel_callers_become_sip_users() -> None:
    plan = dial_plan(replace(TRUNK, caller="+14155550199"))
    _, from_, _ = plan.addresses(Originate(callee="tel:+15550001111"))
    assert str(from_) == "<sip:+14155550199@203.0.113.5>"
    _, from_, _ = plan.addresses(Originate(callee="sip:+15550001111@trunk.example.com"))
    assert str(from_) == "<sip:+14155550199@203.0.113.5>"
    _, from_, _ = plan.addresses(Originate(callee="sip:bob@elsewhere.example"))  # not this trunk
    assert str(from_) == "<sip:active-call@203.0.113.5>"
    _, from_, _ = plan.addresses(Originate(callee="+15550001111", caller="tel:+14155550100"))
    assert str(from_) == "<sip:+14155550100@203.0.113.5>"


def test_credentials_come_from_the_request_or_the_matching_registration() -> None:
    plan = dial_plan(TRUNK)
    given = plan.credentials(
        Originate(callee="x", username="u1", password="p1"), SipUri.parse("sip:a@b.example")
    )
    assert given is not None and given.username == "u1"
    by_host = plan.credentials(Originate(callee="x"), SipUri.parse("sip:+1@trunk.example.com"))
    assert by_host is not None and by_host.username == "acct"
    by_realm = plan.credentials(Originate(callee="x"), SipUri.parse("sip:+1@sip.example.com"))
    assert by_realm is not None and by_realm.username == "acct"
    assert plan.credentials(Originate(callee="x"), SipUri.parse("sip:+1@elsewhere.example")) is None
