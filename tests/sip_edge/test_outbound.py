"""Outbound call addressing: callee and caller forms, and whose credentials answer a challenge."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from activecall.config import Config, SipRegistration
from activecall.messages import Originate
from activecall.sip_edge.call import SetupFailed
from activecall.sip_edge.outbound import Outbound
from activecall.sip_edge.uri import SipUri

TRUNK = SipRegistration(
    name="trunk", username="acct", password="pw", server="trunk.example.com:5080", realm="sip.example.com"
)


def outbound(*registrations: SipRegistration, external_ip: str = "203.0.113.5") -> Outbound:
    config = Config(external_ip=external_ip, sip_registrations=list(registrations))
    ua = SimpleNamespace(settings=SimpleNamespace(contact_user="active-call"))
    return Outbound(SimpleNamespace(config=config, ua=ua))  # type: ignore[arg-type]


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
    found_uri, from_, found_to = outbound(TRUNK)._addresses(Originate(callee=callee, caller="+14155550100"))
    assert (str(found_uri), str(found_to)) == (uri, to)
    assert str(from_) == "<sip:+14155550100@203.0.113.5>"


def test_a_bare_number_needs_a_trunk() -> None:
    with pytest.raises(SetupFailed, match="no trunk is configured"):
        outbound()._addresses(Originate(callee="+15550001111"))


def test_caller_defaults_and_uris_are_kept() -> None:
    edge = outbound()
    assert edge._caller_uri("") == "sip:active-call@203.0.113.5"
    assert edge._caller_uri("sips:alice@example.com") == "sips:alice@example.com"


def test_a_trunk_caller_id_is_the_default_and_tel_callers_become_sip_users() -> None:
    edge = outbound(replace(TRUNK, caller="+14155550199"))
    _, from_, _ = edge._addresses(Originate(callee="tel:+15550001111"))
    assert str(from_) == "<sip:+14155550199@203.0.113.5>"
    _, from_, _ = edge._addresses(Originate(callee="sip:+15550001111@trunk.example.com"))
    assert str(from_) == "<sip:+14155550199@203.0.113.5>"
    _, from_, _ = edge._addresses(Originate(callee="sip:bob@elsewhere.example"))  # not this trunk
    assert str(from_) == "<sip:active-call@203.0.113.5>"
    _, from_, _ = edge._addresses(Originate(callee="+15550001111", caller="tel:+14155550100"))
    assert str(from_) == "<sip:+14155550100@203.0.113.5>"


def test_credentials_come_from_the_request_or_the_matching_registration() -> None:
    edge = outbound(TRUNK)
    given = edge._credentials(
        Originate(callee="x", username="u1", password="p1"), SipUri.parse("sip:a@b.example")
    )
    assert given is not None and given.username == "u1"
    by_host = edge._credentials(Originate(callee="x"), SipUri.parse("sip:+1@trunk.example.com"))
    assert by_host is not None and by_host.username == "acct"
    by_realm = edge._credentials(Originate(callee="x"), SipUri.parse("sip:+1@sip.example.com"))
    assert by_realm is not None and by_realm.username == "acct"
    assert edge._credentials(Originate(callee="x"), SipUri.parse("sip:+1@elsewhere.example")) is None
