"""RFC 3263 server location against a small DNS server, and failover from one address to the next."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from sip_harness import UdpPeer

from activecall.sip_edge.sip.syntax.message import SipRequest
from activecall.sip_edge.sip.syntax.uri import SipUri
from activecall.sip_edge.sip.transaction.timers import BaseIntervals
from activecall.sip_edge.sip.transport.resolver import ResolveError, Resolver, SrvRecord, order_srv
from activecall.sip_edge.sip.transport.transport import Target, Transport, TransportLayer, TransportSettings
from activecall.sip_edge.sip.ua.ua import IncomingCall, UaSettings, UserAgent

ZONE = {
    ("example.test.", "NAPTR"): [
        '10 50 "s" "SIPS+D2T" "" _sips._tcp.example.test.',
        '20 50 "s" "SIP+D2U" "" _sip._udp.example.test.',
        '15 50 "s" "SIP+D2X" "" _sip._x.example.test.',  # a service we do not speak
    ],
    ("_sips._tcp.example.test.", "SRV"): ["10 0 5061 tls1.example.test."],
    ("_sip._udp.example.test.", "SRV"): ["20 0 5062 udp2.example.test.", "10 0 5060 udp1.example.test."],
    ("tls1.example.test.", "A"): ["192.0.2.11"],
    ("udp1.example.test.", "A"): ["192.0.2.21"],
    ("udp2.example.test.", "A"): ["192.0.2.22"],
    ("_sip._tcp.srvonly.test.", "SRV"): ["10 0 5070 host.srvonly.test."],
    ("host.srvonly.test.", "A"): ["192.0.2.31"],
    ("plain.test.", "A"): ["192.0.2.41"],
    ("plain.test.", "AAAA"): ["2001:db8::41"],
}


class FakeDns(asyncio.DatagramProtocol):
    """Answers A, AAAA, SRV and NAPTR questions from a zone held in a dict."""

    def __init__(self, zone: dict[tuple[str, str], list[str]]) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name, rdtype = question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)
        texts = self.zone.get((name, rdtype))
        if texts:
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", rdtype, *texts))
        elif not any(key[0] == name for key in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def nameserver() -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: FakeDns(ZONE), local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def targets(found: list[Target]) -> list[tuple[str, str, int]]:
    return [(t.transport.value, t.host, t.port) for t in found]


async def test_naptr_then_srv_then_a_in_order(nameserver: int) -> None:
    resolver = Resolver(["127.0.0.1"], port=nameserver)
    found = await resolver.resolve(SipUri.parse("sip:+15550001111@example.test"))
    assert targets(found) == [
        ("TLS", "192.0.2.11", 5061),
        ("UDP", "192.0.2.21", 5060),
        ("UDP", "192.0.2.22", 5062),
    ]
    assert found[0].server_name == "example.test"
    secure = await resolver.resolve(SipUri.parse("sips:+15550001111@example.test"))
    assert targets(secure) == [("TLS", "192.0.2.11", 5061)]


async def test_without_naptr_each_transport_gets_an_srv_query(nameserver: int) -> None:
    resolver = Resolver(["127.0.0.1"], port=nameserver)
    assert targets(await resolver.resolve(SipUri.parse("sip:srvonly.test"))) == [("TCP", "192.0.2.31", 5070)]
    explicit = await resolver.resolve(SipUri.parse("sip:srvonly.test;transport=tcp"))
    assert targets(explicit) == [("TCP", "192.0.2.31", 5070)]


async def test_without_srv_the_address_records_get_the_default_port(nameserver: int) -> None:
    resolver = Resolver(["127.0.0.1"], port=nameserver)
    assert targets(await resolver.resolve(SipUri.parse("sip:plain.test"))) == [
        ("UDP", "192.0.2.41", 5060),
        ("UDP", "2001:db8::41", 5060),
    ]
    assert targets(await resolver.resolve(SipUri.parse("sip:plain.test:5080;transport=tls"))) == [
        ("TLS", "192.0.2.41", 5080),
        ("TLS", "2001:db8::41", 5080),
    ]
    with pytest.raises(ResolveError):
        await resolver.resolve(SipUri.parse("sip:missing.test"))


def test_srv_records_are_ordered_by_priority_then_weight() -> None:
    records = [
        SrvRecord(20, 0, 1, "c"),
        SrvRecord(10, 1, 2, "a"),
        SrvRecord(10, 0, 3, "b"),
        SrvRecord(30, 5, 4, "d"),
    ]
    for seed in range(20):
        ordered = [r.target for r in order_srv(records, random.Random(seed))]
        assert ordered[2:] == ["c", "d"]
        assert sorted(ordered[:2]) == ["a", "b"]
    # With weights 1000 and 1, the heavy record comes first almost always.
    heavy = [SrvRecord(10, 1000, 1, "heavy"), SrvRecord(10, 1, 2, "light")]
    firsts = [order_srv(heavy, random.Random(seed))[0].target for seed in range(50)]
    assert firsts.count("heavy") >= 45


class Answerer:
    def on_invite(self, call: IncomingCall) -> None:
        call.reject(486)


async def test_a_silent_address_is_abandoned_for_the_next_one() -> None:
    silent = await UdpPeer.open()
    live_transport = TransportLayer(settings=TransportSettings(public_host="127.0.0.1"))
    UserAgent(live_transport, Answerer())
    _, live_port = await live_transport.listen(Transport.UDP, "127.0.0.1", 0)
    transport = TransportLayer(settings=TransportSettings(public_host="127.0.0.1"))
    ua = UserAgent(
        transport,
        Answerer(),
        settings=UaSettings(failover_timeout=0.3),
        intervals=BaseIntervals.scaled(0.05),
    )
    await transport.listen(Transport.UDP, "127.0.0.1", 0)
    try:
        request = SipRequest.parse(
            b"OPTIONS sip:ping@example.test SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKx\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:edge@example.test>;tag=f1\r\nTo: <sip:ping@example.test>\r\n"
            b"Call-ID: failover@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        dests: list[Target] = [
            Target(Transport.UDP, "127.0.0.1", silent.port),
            Target(Transport.UDP, "127.0.0.1", live_port),
        ]
        response = await ua.send(request, list(dests))
        assert response.status == 200
        first = SipRequest.parse(await silent.receive())
        assert first.call_id == "failover@test"
        assert first.top_via.branch != response.top_via.branch  # a new transaction for the next address
    finally:
        silent.close()
        await transport.close()
        await live_transport.close()


async def test_a_refused_connection_moves_on_at_once() -> None:
    from activecall.testing.redis_server import free_port

    live_transport = TransportLayer(settings=TransportSettings(public_host="127.0.0.1"))
    UserAgent(live_transport, Answerer())
    _, live_port = await live_transport.listen(Transport.TCP, "127.0.0.1", 0)
    transport = TransportLayer(settings=TransportSettings(public_host="127.0.0.1"))
    ua = UserAgent(transport, Answerer(), settings=UaSettings(failover_timeout=30))
    await transport.listen(Transport.UDP, "127.0.0.1", 0)
    try:
        response = await asyncio.wait_for(
            ua.options(SipUri.parse(f"sip:127.0.0.1:{free_port()};transport=tcp")), 5
        )
        assert response.status == 503  # one address, refused: the synthetic 503
        request = SipRequest.parse(
            b"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP x;branch=z9hG4bKx\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:edge@127.0.0.1>;tag=f1\r\nTo: <sip:ping@127.0.0.1>\r\n"
            b"Call-ID: refused@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        dests = [
            Target(Transport.TCP, "127.0.0.1", free_port()),
            Target(Transport.TCP, "127.0.0.1", live_port),
        ]
        response = await asyncio.wait_for(ua.send(request, list(dests)), 5)
        assert response.status == 200
    finally:
        await transport.close()
        await live_transport.close()
