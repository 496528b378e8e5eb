"""Transaction state machines (RFC 3261 section 17, RFC 6026) on a manual clock and a recording transport."""

from __future__ import annotations

import pytest
from sip_harness import ManualClock, RecordingTransport

from activecall.sip_edge.sip.syntax.message import SipRequest, SipResponse, make_response
from activecall.sip_edge.sip.transaction.timers import BaseIntervals, timer_values
from activecall.sip_edge.sip.transaction.transaction import (
    ClientTransaction,
    InviteServerTransaction,
    ServerTransaction,
    State,
    TransactionLayer,
    TransactionTimeout,
    TransactionTransportError,
    server_key,
)
from activecall.sip_edge.sip.transport.transport import Flow, Target, Transport

PEER = ("192.0.2.1", 5060)
LOCAL = ("192.0.2.10", 5060)
UDP_TARGET = Target(Transport.UDP, *PEER)
TCP_TARGET = Target(Transport.TCP, *PEER)


def request(
    method: str = "INVITE", branch: str = "z9hG4bKa1", transport: str = "UDP", cseq: int = 1
) -> SipRequest:
    text = (
        f"{method} sip:bob@192.0.2.10 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 192.0.2.1:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@192.0.2.1>;tag=from1\r\n"
        "To: <sip:bob@192.0.2.10>\r\n"
        "Call-ID: call-1@192.0.2.1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@192.0.2.1>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return SipRequest.parse(text.encode())


def response_to(req: SipRequest, status: int, tag: str | None = "to1") -> SipResponse:
    return make_response(req, status, to_tag=tag)


def ack_for(req: SipRequest, tag: str = "to1") -> SipRequest:
    ack = request("ACK", branch=req.top_via.branch or "")
    ack.headers.set("To", f"<sip:bob@192.0.2.10>;tag={tag}")
    ack.headers.set("CSeq", f"{req.cseq.number} ACK")
    return ack


class RecordingTU:
    def __init__(self) -> None:
        self.requests: list[tuple[SipRequest, ServerTransaction]] = []
        self.acks: list[SipRequest] = []
        self.cancels: list[InviteServerTransaction] = []
        self.strays: list[SipResponse] = []

    def on_request(self, req: SipRequest, tx: ServerTransaction) -> None:
        self.requests.append((req, tx))

    def on_ack(self, ack: SipRequest, flow: Flow) -> None:
        self.acks.append(ack)

    def on_cancel(self, invite: InviteServerTransaction, cancel: SipRequest) -> None:
        self.cancels.append(invite)

    def on_stray_response(self, response: SipResponse, flow: Flow) -> None:
        self.strays.append(response)


class Setup:
    def __init__(self, t1: float = 0.5, fail: bool = False) -> None:
        self.clock = ManualClock()
        self.transport = RecordingTransport(self.clock, fail=fail)
        self.tu = RecordingTU()
        self.layer = TransactionLayer(self.transport, self.tu, BaseIntervals.scaled(t1), self.clock)  # type: ignore[arg-type]
        self.responses: list[SipResponse] = []

    def send(self, req: SipRequest, dest: Target = UDP_TARGET) -> ClientTransaction:
        return self.layer.send_request(req, dest, self.responses.append)

    def receive(self, message: SipRequest | SipResponse, transport: Transport = Transport.UDP) -> None:
        self.layer.receive(message, Flow(transport, PEER, LOCAL))


def scaled(times: list[float], t1: float) -> list[float]:
    return [pytest.approx(t * t1 / 0.5) for t in times]


# ------------------------------------------------------------------------------------- timers


def test_timer_values_follow_table_4_of_rfc_3261() -> None:
    udp = timer_values(BaseIntervals(), reliable=False)
    assert (udp.a, udp.b, udp.d, udp.e, udp.f, udp.g, udp.h) == (0.5, 32.0, 32.0, 0.5, 32.0, 0.5, 32.0)
    assert (udp.i, udp.j, udp.k, udp.l, udp.m, udp.t2) == (5.0, 32.0, 5.0, 32.0, 32.0, 4.0)
    tcp = timer_values(BaseIntervals(), reliable=True)
    assert (tcp.d, tcp.i, tcp.j, tcp.k, tcp.b, tcp.h) == (0.0, 0.0, 0.0, 0.0, 32.0, 32.0)
    shrunk = timer_values(BaseIntervals.scaled(0.05), reliable=False)
    assert (shrunk.a, shrunk.t2, shrunk.b, shrunk.i) == pytest.approx((0.05, 0.4, 3.2, 0.5))


# ------------------------------------------------------------------------------------- client INVITE


@pytest.mark.parametrize("t1", [0.5, 0.05])
def test_invite_client_retransmits_on_timer_a_then_times_out_with_408(t1: float) -> None:
    s = Setup(t1)
    tx = s.send(request())
    s.clock.advance(64 * t1 - 1e-6)
    assert s.transport.times("INVITE") == scaled([0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5], t1)
    assert s.responses == []
    s.clock.advance(1e-6)
    assert [r.status for r in s.responses] == [408]
    assert isinstance(tx.error, TransactionTimeout)
    assert tx.state is State.TERMINATED
    assert s.layer.counts == (0, 0)


def test_invite_client_over_tcp_does_not_retransmit() -> None:
    s = Setup()
    s.send(request(transport="TCP"), TCP_TARGET)
    s.clock.advance(40)
    assert s.transport.times("INVITE") == [0]
    assert [r.status for r in s.responses] == [408]


def test_invite_client_provisional_stops_retransmissions_and_timer_b() -> None:
    s = Setup()
    req = request()
    tx = s.send(req)
    s.clock.advance(0.7)
    s.receive(response_to(req, 180))
    s.clock.advance(100)
    assert s.transport.times("INVITE") == [0, 0.5]
    assert [r.status for r in s.responses] == [180]
    assert tx.state is State.PROCEEDING


def test_invite_client_acks_a_non_2xx_final_and_absorbs_its_retransmissions() -> None:
    s = Setup()
    req = request()
    tx = s.send(req)
    busy = response_to(req, 486, tag="callee9")
    s.receive(busy)
    s.clock.advance(1)
    s.receive(busy)
    assert [r.status for r in s.responses] == [486]
    acks = s.transport.messages("ACK")
    assert len(acks) == 2
    ack = acks[0]
    assert str(ack.uri) == "sip:bob@192.0.2.10"
    assert ack.headers.get("Via") == req.headers.get("Via")
    assert ack.headers.get("To") == "<sip:bob@192.0.2.10>;tag=callee9"
    assert (ack.headers.get("CSeq"), ack.call_id, ack.from_.tag) == ("1 ACK", "call-1@192.0.2.1", "from1")
    assert tx.state is State.COMPLETED
    s.clock.advance(31.5)  # Timer D: 32 s on UDP
    assert tx.state is State.TERMINATED


def test_invite_client_passes_every_2xx_to_the_tu_until_timer_m() -> None:
    s = Setup()
    req = request()
    tx = s.send(req)
    ok = response_to(req, 200)
    s.receive(ok)
    s.receive(ok)
    assert [r.status for r in s.responses] == [200, 200]
    assert tx.state is State.ACCEPTED
    assert s.transport.messages("ACK") == []  # the TU acknowledges a 2xx
    s.clock.advance(32)
    assert tx.state is State.TERMINATED
    s.receive(ok)
    assert [r.status for r in s.tu.strays] == [200]


def test_transport_error_ends_a_client_transaction_with_503() -> None:
    s = Setup(fail=True)
    tx = s.send(request(transport="TCP"), TCP_TARGET)
    assert [r.status for r in s.responses] == [503]
    assert isinstance(tx.error, TransactionTransportError)
    assert tx.state is State.TERMINATED


def test_cancel_is_built_from_the_invite() -> None:
    s = Setup()
    req = request()
    tx = s.send(req)
    assert hasattr(tx, "make_cancel")
    cancel = tx.make_cancel()
    assert cancel.method == "CANCEL"
    assert (str(cancel.uri), cancel.headers.get("Via"), cancel.headers.get("To")) == (
        "sip:bob@192.0.2.10",
        req.headers.get("Via"),
        "<sip:bob@192.0.2.10>",
    )
    assert cancel.headers.get("CSeq") == "1 CANCEL"


# ------------------------------------------------------------------------------------- client non-INVITE


@pytest.mark.parametrize("t1", [0.5, 0.1])
def test_non_invite_client_retransmits_up_to_t2_then_times_out(t1: float) -> None:
    s = Setup(t1)
    tx = s.send(request("OPTIONS"))
    s.clock.advance(64 * t1)
    expected = [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert s.transport.times("OPTIONS") == scaled(expected, t1)
    assert [r.status for r in s.responses] == [408]
    assert isinstance(tx.error, TransactionTimeout)


def test_non_invite_client_in_proceeding_retransmits_every_t2() -> None:
    s = Setup()
    req = request("BYE")
    s.send(req)
    s.clock.advance(1.0)
    s.receive(response_to(req, 100, tag=None))
    s.clock.advance(31.0)
    assert s.transport.times("BYE") == [0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert [r.status for r in s.responses] == [100, 408]


def test_non_invite_client_completes_and_absorbs_retransmitted_finals() -> None:
    s = Setup()
    req = request("BYE")
    tx = s.send(req)
    s.receive(response_to(req, 200))
    s.receive(response_to(req, 200))
    assert [r.status for r in s.responses] == [200]
    assert tx.state is State.COMPLETED
    s.clock.advance(5)  # Timer K = T4
    assert tx.state is State.TERMINATED


# ------------------------------------------------------------------------------------- server INVITE


def test_invite_server_sends_100_trying_when_the_tu_is_silent() -> None:
    s = Setup()
    s.receive(request())
    ((_, tx),) = s.tu.requests
    s.clock.advance(0.19)
    assert s.transport.sent == []
    s.clock.advance(0.01)
    (trying,) = s.transport.messages("SIP/2.0 100")
    assert trying.to.tag is None
    assert tx.state is State.PROCEEDING


def test_invite_server_retransmits_a_non_2xx_on_timer_g_until_timer_h() -> None:
    s = Setup()
    s.receive(request())
    ((_, tx),) = s.tu.requests
    tx.reply(486)
    s.clock.advance(32)
    expected = [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert s.transport.times("SIP/2.0 486") == expected
    assert tx.state is State.TERMINATED


def test_invite_server_confirmed_by_ack_then_timer_i() -> None:
    s = Setup()
    req = request()
    s.receive(req)
    ((_, tx),) = s.tu.requests
    tx.reply(486)
    s.clock.advance(0.6)
    s.receive(ack_for(req, tx.to_tag))
    s.receive(ack_for(req, tx.to_tag))
    assert tx.state is State.CONFIRMED
    assert s.tu.acks == []
    s.clock.advance(10)
    assert s.transport.times("SIP/2.0 486") == [0, 0.5]
    assert tx.state is State.TERMINATED


def test_invite_server_answers_a_retransmitted_invite_with_the_last_response() -> None:
    s = Setup()
    req = request()
    s.receive(req)
    ((_, tx),) = s.tu.requests
    tx.reply(180)
    s.receive(req)
    assert len(s.tu.requests) == 1
    assert [m.status for m in s.transport.messages("SIP/2.0")] == [180, 180]


def test_invite_server_2xx_moves_to_accepted_and_absorbs_retransmissions() -> None:
    s = Setup()
    req = request()
    s.receive(req)
    ((_, tx),) = s.tu.requests
    tx.reply(200)
    s.receive(req)
    assert tx.state is State.ACCEPTED
    assert [m.status for m in s.transport.messages("SIP/2.0")] == [200]
    tx.reply(200)  # the TU's own retransmission goes out
    assert [m.status for m in s.transport.messages("SIP/2.0")] == [200, 200]
    s.clock.advance(32)  # Timer L
    assert tx.state is State.TERMINATED


def test_cancel_answers_200_then_487_to_the_invite() -> None:
    s = Setup()
    req = request()
    s.receive(req)
    ((_, tx),) = s.tu.requests
    tx.reply(180)
    s.receive(request("CANCEL", branch="z9hG4bKa1"))
    assert s.tu.cancels == [tx]
    statuses = [(m.status, m.cseq.method) for m in s.transport.messages("SIP/2.0")]
    assert statuses == [(180, "INVITE"), (200, "CANCEL"), (487, "INVITE")]
    to_tags = {m.to.tag for m in s.transport.messages("SIP/2.0")}
    assert to_tags == {tx.to_tag}
    s.receive(ack_for(req, tx.to_tag))
    assert tx.state is State.CONFIRMED
    assert len(s.tu.requests) == 1  # the CANCEL never reaches the TU as a request


def test_cancel_after_the_final_response_only_gets_200() -> None:
    s = Setup()
    s.receive(request())
    ((_, tx),) = s.tu.requests
    tx.reply(200)
    s.receive(request("CANCEL", branch="z9hG4bKa1"))
    assert [(m.status, m.cseq.method) for m in s.transport.messages("SIP/2.0")] == [
        (200, "INVITE"),
        (200, "CANCEL"),
    ]
    assert s.tu.cancels == []


def test_cancel_without_its_invite_gets_481() -> None:
    s = Setup()
    s.receive(request("CANCEL", branch="z9hG4bKnone"))
    assert [m.status for m in s.transport.messages("SIP/2.0")] == [481]


# ------------------------------------------------------------------------------------- server non-INVITE


def test_non_invite_server_absorbs_retransmissions_until_answered_then_repeats_the_final() -> None:
    s = Setup()
    req = request("BYE")
    s.receive(req)
    ((_, tx),) = s.tu.requests
    s.receive(req)
    assert s.transport.sent == []
    tx.reply(200)
    s.receive(req)
    assert [m.status for m in s.transport.messages("SIP/2.0")] == [200, 200]
    s.clock.advance(32)  # Timer J
    assert tx.state is State.TERMINATED


def test_non_invite_server_over_tcp_terminates_at_once() -> None:
    s = Setup()
    s.receive(request("BYE", transport="TCP"), Transport.TCP)
    ((_, tx),) = s.tu.requests
    tx.reply(200)
    assert tx.state is State.TERMINATED


# ------------------------------------------------------------------------------------- matching


def test_matching_uses_branch_sent_by_and_method() -> None:
    invite = request()
    assert server_key(invite) == ("z9hG4bKa1", "192.0.2.1:5060", "INVITE")
    assert server_key(ack_for(invite)) == server_key(invite)
    assert server_key(request("CANCEL")) == ("z9hG4bKa1", "192.0.2.1:5060", "CANCEL")


def test_rfc_2543_requests_match_by_call_id_from_tag_cseq_and_via() -> None:
    s = Setup()
    old = request(branch="1")
    s.receive(old)
    ((_, tx),) = s.tu.requests
    tx.reply(404)
    s.receive(old)
    ack = ack_for(old, tx.to_tag)
    ack.headers.set("Via", old.headers.get("Via") or "")
    s.receive(ack)
    assert len(s.tu.requests) == 1
    assert [m.status for m in s.transport.messages("SIP/2.0")] == [404, 404]
    assert tx.state is State.CONFIRMED


def test_a_response_for_no_transaction_goes_to_the_tu() -> None:
    s = Setup()
    s.send(request())
    other = response_to(request(branch="z9hG4bKother"), 200)
    s.receive(other)
    assert s.tu.strays == [other]
    assert s.responses == []


def test_an_rfc_2543_request_whose_transaction_cannot_be_named_gets_400() -> None:
    s = Setup()
    bad = request("OPTIONS", branch="old")
    bad.headers.set("CSeq", "one OPTIONS")
    s.receive(bad)
    (answer,) = s.transport.messages("SIP/2.0")
    assert (answer.status, answer.reason) == (400, "Bad CSeq")
    assert s.tu.requests == []
