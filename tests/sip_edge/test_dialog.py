"""Dialog state (RFC 3261 section 12): route sets, remote targets, CSeq, in-dialog requests and ACKs."""

from __future__ import annotations

from activecall.sip_edge.sip.dialog.dialog import Dialog, DialogState
from activecall.sip_edge.sip.syntax.message import SipRequest, SipResponse, make_response
from activecall.sip_edge.sip.syntax.uri import NameAddr

# An INVITE as Twilio sends it: two Record-Route entries and a private Contact.
TWILIO_INVITE = (
    b"INVITE sip:+15550001111@203.0.113.5:5061;transport=tls SIP/2.0\r\n"
    b"Record-Route: <sip:54.172.60.2:5061;transport=tls;lr;r2=on>\r\n"
    b"Record-Route: <sip:172.25.10.216:5060;lr;r2=on>\r\n"
    b"Via: SIP/2.0/TLS 54.172.60.2:5061;branch=z9hG4bKtw1\r\n"
    b"Via: SIP/2.0/UDP 172.25.10.216:5060;branch=z9hG4bKtw0\r\n"
    b"Max-Forwards: 68\r\n"
    b'From: "+14155550100" <sip:+14155550100@sip.twilio.com>;tag=71218409_6772d868_f8b1d5a2\r\n'
    b"To: <sip:+15550001111@203.0.113.5>\r\n"
    b"Call-ID: 8a3b2a6f1dc0f3b6e0c2f2b8e8f0d0c3@0.0.0.0\r\n"
    b"CSeq: 101 INVITE\r\n"
    b"Contact: <sip:+14155550100@172.18.35.158:5060>\r\n"
    b"Allow: ACK,BYE,CANCEL,INVITE,OPTIONS,REFER,NOTIFY\r\n"
    b"Content-Length: 0\r\n\r\n"
)
EDGE_CONTACT = NameAddr.parse("<sip:active-call@203.0.113.5:5061;transport=tls>")


def uas_dialog() -> Dialog:
    return Dialog.as_uas(SipRequest.parse(TWILIO_INVITE), "edge1", EDGE_CONTACT)


def test_uas_dialog_takes_the_record_route_in_order_and_the_contact_as_target() -> None:
    dialog = uas_dialog()
    assert dialog.key == ("8a3b2a6f1dc0f3b6e0c2f2b8e8f0d0c3@0.0.0.0", "edge1", "71218409_6772d868_f8b1d5a2")
    assert [str(r) for r in dialog.route_set] == [
        "<sip:54.172.60.2:5061;transport=tls;lr;r2=on>",
        "<sip:172.25.10.216:5060;lr;r2=on>",
    ]
    assert str(dialog.remote_target) == "sip:+14155550100@172.18.35.158:5060"
    assert (dialog.remote_seq, dialog.is_uac, dialog.state) == (101, False, DialogState.CONFIRMED)
    assert str(dialog.next_hop) == "sip:54.172.60.2:5061;transport=tls;lr;r2=on"


def test_bye_from_the_uas_follows_the_route_set_to_the_private_contact() -> None:
    dialog = uas_dialog()
    first = dialog.local_seq
    bye = dialog.create_request("BYE")
    assert bytes(bye).decode() == (
        "BYE sip:+14155550100@172.18.35.158:5060 SIP/2.0\r\n"
        "Route: <sip:54.172.60.2:5061;transport=tls;lr;r2=on>\r\n"
        "Route: <sip:172.25.10.216:5060;lr;r2=on>\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:+15550001111@203.0.113.5>;tag=edge1\r\n"
        'To: "+14155550100" <sip:+14155550100@sip.twilio.com>;tag=71218409_6772d868_f8b1d5a2\r\n'
        "Call-ID: 8a3b2a6f1dc0f3b6e0c2f2b8e8f0d0c3@0.0.0.0\r\n"
        f"CSeq: {first + 1} BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    assert dialog.create_request("INFO").cseq.number == first + 2


def test_target_refresh_requests_carry_our_contact() -> None:
    dialog = uas_dialog()
    assert dialog.create_request("INVITE").headers.get("Contact") == str(EDGE_CONTACT)
    assert dialog.create_request("REFER").headers.get("Contact") == str(EDGE_CONTACT)
    assert dialog.create_request("BYE").headers.get("Contact") is None


def test_an_out_of_order_cseq_is_refused() -> None:
    dialog = uas_dialog()
    request = dialog.create_request("BYE")
    request.headers.set("CSeq", "100 BYE")
    assert not dialog.accept_request(request)
    request.headers.set("CSeq", "102 BYE")
    assert dialog.accept_request(request)
    assert dialog.remote_seq == 102


def test_uac_dialog_reverses_the_record_route_and_acks_with_the_invite_credentials() -> None:
    invite = SipRequest.parse(
        b"INVITE sip:+15550001111@trunk.pstn.twilio.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKx\r\n"
        b"From: <sip:+14155550100@203.0.113.5>;tag=ours\r\n"
        b"To: <sip:+15550001111@trunk.pstn.twilio.com>\r\n"
        b"Call-ID: out-1@203.0.113.5\r\n"
        b"CSeq: 2 INVITE\r\n"
        b"Contact: <sip:active-call@203.0.113.5:5060>\r\n"
        b'Proxy-Authorization: Digest username="u", realm="sip.twilio.com", nonce="n", uri="x", '
        b'response="r"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    ok = make_response(invite, 200, to_tag="theirs")
    ok.headers.add("Record-Route", "<sip:54.172.60.0:5060;lr>")
    ok.headers.add("Record-Route", "<sip:10.0.0.1;lr>")
    ok.headers.add("Contact", "<sip:+15550001111@10.9.8.7:5060>")
    dialog = Dialog.as_uac(invite, SipResponse.parse(bytes(ok)))
    assert [str(r.uri) for r in dialog.route_set] == ["sip:10.0.0.1;lr", "sip:54.172.60.0:5060;lr"]
    assert (dialog.local_seq, dialog.remote_seq, dialog.is_uac) == (2, None, True)
    ack = dialog.create_ack(invite)
    assert str(ack.uri) == "sip:+15550001111@10.9.8.7:5060"
    assert ack.headers.get("CSeq") == "2 ACK"
    assert ack.headers.get_all("Route") == ["<sip:10.0.0.1;lr>", "<sip:54.172.60.0:5060;lr>"]
    assert ack.headers.get("Proxy-Authorization") == invite.headers.get("Proxy-Authorization")
    assert dialog.create_request("BYE").cseq.number == 3


def test_strict_routing_puts_the_first_route_in_the_request_uri() -> None:
    dialog = uas_dialog()
    dialog.route_set = [NameAddr.parse("<sip:strict.example.com>"), NameAddr.parse("<sip:p2.example.com;lr>")]
    request = dialog.create_request("BYE")
    assert str(request.uri) == "sip:strict.example.com"
    assert request.headers.get_all("Route") == [
        "<sip:p2.example.com;lr>",
        "<sip:+14155550100@172.18.35.158:5060>",
    ]


def test_refresh_takes_the_new_contact() -> None:
    dialog = uas_dialog()
    reinvite = dialog.create_request("INVITE")
    reinvite.headers.set("Contact", "<sip:+14155550100@172.18.35.200:5062>")
    dialog.refresh_target(reinvite)
    assert str(dialog.remote_target) == "sip:+14155550100@172.18.35.200:5062"
