"""The user agent on a manual clock: 2xx retransmission until ACK, session timers, in-dialog requests."""

from __future__ import annotations

import asyncio

from sip_harness import ManualClock, RecordingTransport

from activecall.sip_edge.sip.dialog.session import InviteSession, SessionListener
from activecall.sip_edge.sip.syntax.message import SipRequest, SipResponse, make_response
from activecall.sip_edge.sip.syntax.sdp import SdpParseError
from activecall.sip_edge.sip.syntax.uri import NameAddr, SipUri
from activecall.sip_edge.sip.transaction.timers import BaseIntervals
from activecall.sip_edge.sip.transport.resolver import Resolver
from activecall.sip_edge.sip.transport.transport import Flow, Transport
from activecall.sip_edge.sip.ua.ua import IncomingCall, OutgoingCall, UaSettings, UserAgent

PEER = ("192.0.2.1", 5060)
FLOW = Flow(Transport.UDP, PEER, ("192.0.2.10", 5060))
OFFER = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ANSWER = (
    b"v=0\r\no=- 2 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
)


class Recorder(SessionListener):
    def __init__(self) -> None:
        self.offers: list[bytes] = []
        self.ended: list[tuple[str, str]] = []
        self.dtmf: list[tuple[str, int]] = []
        self.refer_progress: list[tuple[int, bool]] = []

    async def on_offer(self, session: InviteSession, offer: bytes) -> bytes:
        self.offers.append(offer)
        return ANSWER.replace(b"sendrecv", b"recvonly") if b"sendonly" in offer else ANSWER

    def on_terminated(self, session: InviteSession, reason: str, by: str) -> None:
        self.ended.append((reason, by))

    def on_dtmf(self, session: InviteSession, digit: str, duration_ms: int) -> None:
        self.dtmf.append((digit, duration_ms))

    def on_refer_progress(self, session: InviteSession, status: int, final: bool) -> None:
        self.refer_progress.append((status, final))


class Answering:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.calls: list[IncomingCall] = []
        self.sessions: list[InviteSession] = []

    def on_invite(self, call: IncomingCall) -> None:
        self.calls.append(call)
        self.sessions.append(call.accept(ANSWER, self.recorder))


class Peer:
    """The far end: builds its requests within the dialog."""

    def __init__(self, ua: UserAgent, session: InviteSession) -> None:
        self.ua = ua
        self.session = session
        self.cseq = 1

    def request(
        self, method: str, headers: str = "", body: bytes = b"", cseq: int | None = None
    ) -> SipRequest:
        if method != "ACK":
            self.cseq = cseq if cseq is not None else self.cseq + 1
        number = self.cseq if method != "ACK" else 1
        text = (
            f"{method} sip:active-call@192.0.2.10 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{method.lower()}{number}\r\n"
            "From: <sip:alice@192.0.2.1>;tag=peer1\r\n"
            f"To: <sip:bob@192.0.2.10>;tag={self.session.dialog.local_tag}\r\n"
            "Call-ID: ua-call@192.0.2.1\r\n"
            f"CSeq: {number} {method}\r\n"
            "Contact: <sip:alice@192.0.2.1>\r\n"
            f"{headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return SipRequest.parse(text.encode() + body)

    def send(self, request: SipRequest) -> None:
        self.ua.transactions.receive(request, FLOW)


def invite(headers: str = "") -> SipRequest:
    text = (
        "INVITE sip:bob@192.0.2.10 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@192.0.2.1>;tag=peer1\r\n"
        "To: <sip:bob@192.0.2.10>\r\n"
        "Call-ID: ua-call@192.0.2.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:alice@192.0.2.1>\r\n"
        f"{headers}"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(OFFER)}\r\n\r\n"
    )
    return SipRequest.parse(text.encode() + OFFER)


class Setup:
    def __init__(self, min_se: int = 90) -> None:
        self.clock = ManualClock()
        self.transport = RecordingTransport(self.clock)
        self.recorder = Recorder()
        self.listener = Answering(self.recorder)
        self.ua = UserAgent(
            self.transport,  # type: ignore[arg-type]
            self.listener,
            resolver=Resolver(),
            settings=UaSettings(min_se=min_se),
            intervals=BaseIntervals(),
            scheduler=self.clock,
        )

    def call(self, headers: str = "") -> tuple[InviteSession, Peer]:
        self.ua.transactions.receive(invite(headers), FLOW)
        (session,) = self.listener.sessions
        return session, Peer(self.ua, session)

    def responses(self, method: str) -> list[SipResponse]:
        return [m for m in self.transport.messages("SIP/2.0") if m.cseq.method == method]

    def answer(self, request: SipRequest, status: int = 200) -> None:
        self.ua.transactions.receive(make_response(request, status, to_tag="peer1"), FLOW)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_2xx_is_retransmitted_until_the_ack() -> None:
    s = Setup()
    session, peer = s.call()
    s.clock.advance(2.0)
    assert s.transport.times("SIP/2.0 200") == [0, 0.5, 1.5]
    peer.send(peer.request("ACK"))
    s.clock.advance(60)
    assert s.transport.times("SIP/2.0 200") == [0, 0.5, 1.5]
    assert session.acked.is_set()
    assert not session.terminated.is_set()


async def test_a_session_whose_ack_never_comes_is_ended_with_bye() -> None:
    s = Setup()
    session, _ = s.call()
    s.clock.advance(31.9)
    expected = [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert s.transport.times("SIP/2.0 200") == expected
    s.clock.advance(0.1)
    await settle()
    (bye,) = s.transport.messages("BYE")
    assert str(bye.uri) == "sip:alice@192.0.2.1"
    s.answer(bye)
    await settle()
    assert s.recorder.ended == [("no ACK", "local")]
    assert s.ua.sessions == {}


async def test_a_too_short_session_interval_is_refused_with_422() -> None:
    s = Setup()
    s.ua.transactions.receive(invite("Supported: timer\r\nSession-Expires: 60\r\n"), FLOW)
    (refusal,) = s.responses("INVITE")
    assert (refusal.status, refusal.headers.get("Min-SE")) == (422, "90")
    assert s.listener.calls == []


async def test_the_peer_refreshes_and_we_end_the_session_when_it_stops() -> None:
    s = Setup()
    session, peer = s.call("Supported: timer\r\nSession-Expires: 120\r\n")
    (ok,) = s.responses("INVITE")
    assert (ok.headers.get("Session-Expires"), ok.headers.get("Require")) == ("120;refresher=uac", "timer")
    peer.send(peer.request("ACK"))
    s.clock.advance(60)
    peer.send(peer.request("UPDATE", "Session-Expires: 120;refresher=uac\r\nSupported: timer\r\n"))
    await settle()
    (update_ok,) = s.responses("UPDATE")
    assert (update_ok.status, update_ok.headers.get("Session-Expires")) == (200, "120;refresher=uac")
    s.clock.advance(87.9)  # 88 s after the first 2xx, but the refresh moved the expiry
    await settle()
    assert s.transport.messages("BYE") == []
    s.clock.advance(60)  # 60 + 88 = 148 s: no refresh since the UPDATE
    await settle()
    (bye,) = s.transport.messages("BYE")
    s.answer(bye)
    await settle()
    assert s.recorder.ended == [("session expired", "local")]


async def test_we_refresh_with_a_reinvite_when_the_peer_cannot_refresh() -> None:
    s = Setup()
    session, peer = s.call("Session-Expires: 120\r\nAllow: INVITE, ACK, BYE, CANCEL\r\n")
    (ok,) = s.responses("INVITE")
    assert ok.headers.get("Session-Expires") == "120;refresher=uas"
    assert ok.headers.get("Require") is None  # the peer does not support timers
    peer.send(peer.request("ACK"))
    s.clock.advance(60)
    await settle()
    reinvites = [m for m in s.transport.messages("INVITE")]
    (reinvite,) = reinvites
    assert reinvite.headers.get("Session-Expires") == "120;refresher=uac"
    assert reinvite.body == ANSWER
    ok = make_response(reinvite, 200, to_tag="peer1")
    ok.headers.add("Contact", "<sip:alice@192.0.2.1>")
    s.ua.transactions.receive(ok, FLOW)
    await settle()
    (ack,) = s.transport.messages("ACK")
    assert ack.cseq.number == reinvite.cseq.number
    s.clock.advance(59.9)
    await settle()
    assert len(s.transport.messages("INVITE")) == 1
    s.clock.advance(0.1)
    await settle()
    assert len(s.transport.messages("INVITE")) == 2


async def test_a_hold_reinvite_is_answered_through_the_listener() -> None:
    s = Setup()
    session, peer = s.call()
    peer.send(peer.request("ACK"))
    hold = OFFER + b"a=sendonly\r\n"
    peer.send(peer.request("INVITE", "Content-Type: application/sdp\r\n", hold))
    await settle()
    assert s.recorder.offers == [hold]
    ok = s.responses("INVITE")[-1]
    assert (ok.status, ok.cseq.number, ok.body) == (200, 2, ANSWER)
    s.clock.advance(0.6)
    assert len([r for r in s.responses("INVITE") if r.cseq.number == 2]) == 2  # retransmitted until the ACK
    assert session.local_sdp == ANSWER


async def test_in_dialog_info_notify_options_and_bye() -> None:
    s = Setup()
    session, peer = s.call()
    peer.send(peer.request("ACK"))
    peer.send(
        peer.request("INFO", "Content-Type: application/dtmf-relay\r\n", b"Signal=5\r\nDuration=160\r\n")
    )
    sipfrag = b"SIP/2.0 200 OK\r\n"
    notify_headers = (
        "Event: refer\r\n"
        "Subscription-State: terminated;reason=noresource\r\n"
        "Content-Type: message/sipfrag\r\n"
    )
    peer.send(peer.request("NOTIFY", notify_headers, sipfrag))
    peer.send(peer.request("OPTIONS"))
    peer.send(peer.request("MESSAGE", "Content-Type: text/plain\r\n"))
    assert s.recorder.dtmf == [("5", 160)]
    assert s.recorder.refer_progress == [(200, True)]
    statuses = {m.cseq.method: m.status for m in s.transport.messages("SIP/2.0") if m.cseq.method != "INVITE"}
    assert statuses == {"INFO": 200, "NOTIFY": 200, "OPTIONS": 200, "MESSAGE": 405}
    options = s.responses("OPTIONS")[0]
    assert options.headers.get("Allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, REFER, UPDATE"
    peer.send(peer.request("BYE", cseq=2))  # lower than the last CSeq
    assert s.responses("BYE")[-1].status == 500
    peer.send(peer.request("BYE", cseq=10))
    assert s.responses("BYE")[-1].status == 200
    assert s.recorder.ended == [("remote hangup", "remote")]
    peer.send(peer.request("BYE", cseq=11))
    assert s.responses("BYE")[-1].status == 481


async def test_out_of_dialog_options_and_unknown_methods() -> None:
    s = Setup()
    options = invite().headers.copy()
    options.set("CSeq", "1 OPTIONS")
    options.remove("Content-Type")
    options.remove("Content-Length")
    s.ua.transactions.receive(SipRequest("OPTIONS", invite().uri, options), FLOW)
    subscribe = invite().headers.copy()
    subscribe.set("CSeq", "1 SUBSCRIBE")
    subscribe.set("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsub")
    subscribe.remove("Content-Type")
    subscribe.remove("Content-Length")
    s.ua.transactions.receive(SipRequest("SUBSCRIBE", invite().uri, subscribe), FLOW)
    (ok,) = s.responses("OPTIONS")
    assert (ok.status, ok.headers.get("Supported"), ok.headers.get("Accept")) == (
        200,
        "timer",
        "application/sdp, application/dtmf-relay, application/dtmf, message/sipfrag",
    )
    (refused,) = s.responses("SUBSCRIBE")
    assert (refused.status, refused.headers.get("Allow")) == (405, ok.headers.get("Allow"))


async def test_a_malformed_request_is_answered_400_with_the_reason() -> None:
    s = Setup()
    bad = invite()
    bad.headers.set("Max-Forwards", "lots")
    s.ua.transactions.receive(bad, FLOW)
    (answer,) = s.responses("INVITE")
    assert (answer.status, answer.reason) == (400, "Bad Max-Forwards")
    assert s.listener.calls == []


class Unparsable(Recorder):
    async def on_offer(self, session: InviteSession, offer: bytes) -> bytes:
        raise SdpParseError("invalid line: 'x'")


async def test_an_unreadable_reoffer_gets_488_and_the_session_goes_on() -> None:
    s = Setup()
    s.listener.recorder = Unparsable()
    session, peer = s.call()
    peer.send(peer.request("ACK"))
    peer.send(peer.request("INVITE", "Content-Type: application/sdp\r\n", b"x"))
    await settle()
    refusal = s.responses("INVITE")[-1]
    assert (refusal.status, refusal.headers.get("Warning")) == (488, "399 edge \"invalid line: 'x'\"")
    assert not session.terminated.is_set()


async def test_we_refresh_with_update_when_the_peer_allows_it() -> None:
    s = Setup()
    session, peer = s.call("Session-Expires: 120\r\nAllow: INVITE, ACK, BYE, CANCEL, UPDATE\r\n")
    peer.send(peer.request("ACK"))
    s.clock.advance(60)
    await settle()
    (update,) = s.transport.messages("UPDATE")
    assert (update.headers.get("Session-Expires"), update.body) == ("120;refresher=uac", b"")
    s.answer(update)
    await settle()
    assert s.transport.messages("INVITE") == []
    assert session.timer is not None and session.timer.interval == 120


async def test_a_second_branch_answering_is_acked_and_hung_up() -> None:
    s = Setup()
    call = OutgoingCall(
        s.ua,
        SipUri.parse("sip:bob@192.0.2.1"),
        NameAddr.parse("<sip:alice@192.0.2.10>"),
        NameAddr.parse("<sip:bob@192.0.2.1>"),
        Recorder(),
        body=OFFER,
    )
    running = asyncio.get_running_loop().create_task(call.run())
    await settle()
    (invite_sent,) = s.transport.messages("INVITE")

    def answer(tag: str) -> SipResponse:
        ok = make_response(invite_sent, 200, to_tag=tag)
        ok.headers.add("Contact", f"<sip:bob-{tag}@192.0.2.1>")
        return ok

    s.ua.transactions.receive(answer("first"), FLOW)
    response = await running
    assert (response.status, call.session is not None) == (200, True)
    s.ua.transactions.receive(answer("second"), FLOW)
    s.ua.transactions.receive(answer("first"), FLOW)  # a retransmission: ACKed again, nothing more
    await settle()
    acks = sorted((str(a.uri), a.to.tag) for a in s.transport.messages("ACK"))
    assert acks == [
        ("sip:bob-first@192.0.2.1", "first"),
        ("sip:bob-first@192.0.2.1", "first"),
        ("sip:bob-second@192.0.2.1", "second"),
    ]
    (bye,) = s.transport.messages("BYE")
    assert (str(bye.uri), bye.to.tag) == ("sip:bob-second@192.0.2.1", "second")
