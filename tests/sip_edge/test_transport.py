"""SIP transports over real loopback sockets: UDP, TCP and TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sip_harness import UdpPeer, make_certificate

from activecall.sip_edge.sip.syntax.message import SipRequest, SipResponse, make_response
from activecall.sip_edge.sip.syntax.uri import SipUri
from activecall.sip_edge.sip.transport.resolver import Resolver
from activecall.sip_edge.sip.transport.transport import (
    Flow,
    Target,
    Transport,
    TransportError,
    TransportLayer,
    TransportSettings,
    client_tls_context,
    server_tls_context,
)


def options(branch: str = "z9hG4bKt1", via: str = "127.0.0.1:5999;rport", transport: str = "UDP") -> bytes:
    return (
        "OPTIONS sip:edge@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:peer@127.0.0.1>;tag=p1\r\n"
        "To: <sip:edge@127.0.0.1>\r\n"
        f"Call-ID: {branch}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Inbox:
    """Collects what a transport layer delivers."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[SipRequest | SipResponse, Flow]] = asyncio.Queue()

    def __call__(self, message: SipRequest | SipResponse, flow: Flow) -> None:
        self.queue.put_nowait((message, flow))

    async def next(self) -> tuple[SipRequest | SipResponse, Flow]:
        return await asyncio.wait_for(self.queue.get(), 2.0)


@pytest.fixture
async def layer() -> AsyncIterator[tuple[TransportLayer, Inbox]]:
    inbox = Inbox()
    transport = TransportLayer(inbox, TransportSettings(public_host="127.0.0.1", max_datagram_size=4000))
    try:
        yield transport, inbox
    finally:
        await transport.close()


def parse_errors(transport: str) -> float:
    return REGISTRY.get_sample_value("activecall_sip_parse_errors_total", {"transport": transport}) or 0.0


async def test_udp_request_gets_received_and_rport_and_its_response_goes_to_the_source(
    layer: tuple[TransportLayer, Inbox],
) -> None:
    transport, inbox = layer
    _, port = await transport.listen(Transport.UDP, "127.0.0.1", 0)
    peer = await UdpPeer.open()
    try:
        # The Via names another host and port: the response must follow rport to the real source.
        peer.send(options(via="192.0.2.77:5999;rport"), port)
        request, flow = await inbox.next()
        assert isinstance(request, SipRequest)
        assert request.headers.get("Via") == (
            f"SIP/2.0/UDP 192.0.2.77:5999;rport={peer.port};branch=z9hG4bKt1;received=127.0.0.1"
        )
        assert (flow.transport, flow.remote) == (Transport.UDP, ("127.0.0.1", peer.port))
        transport.send(make_response(request, 200), flow)
        response = SipResponse.parse(await peer.receive())
        assert (response.status, response.top_via.rport, response.top_via.received) == (
            200,
            peer.port,
            "127.0.0.1",
        )
    finally:
        peer.close()


async def test_udp_malformed_requests_get_400_or_are_dropped_and_counted(
    layer: tuple[TransportLayer, Inbox],
) -> None:
    transport, inbox = layer
    _, port = await transport.listen(Transport.UDP, "127.0.0.1", 0)
    peer = await UdpPeer.open()
    before = parse_errors("UDP")
    try:
        truncated = options(via=f"127.0.0.1:{peer.port}").replace(b"Content-Length: 0", b"Content-Length: 50")
        peer.send(truncated, port)
        answer = SipResponse.parse(await peer.receive())
        assert (answer.status, answer.reason) == (400, "Content-Length beyond end of message")
        peer.send(b"\x16\x03\x01 not SIP at all\r\n\r\n", port)
        peer.send(options() + b"x" * 4000, port)  # over max_datagram_size
        peer.send(options(branch="z9hG4bKok", via=f"127.0.0.1:{peer.port}"), port)
        request, _ = await inbox.next()
        assert request.call_id == "z9hG4bKok@127.0.0.1"  # the good one still gets through
        assert inbox.queue.empty()
        assert peer.received.empty()
        assert parse_errors("UDP") - before == 3
    finally:
        peer.close()


async def test_tcp_framing_keepalive_and_response_on_the_same_connection(
    layer: tuple[TransportLayer, Inbox],
) -> None:
    transport, inbox = layer
    _, port = await transport.listen(Transport.TCP, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = options(transport="TCP") + b"\r\n\r\n" + options(branch="z9hG4bKt2", transport="TCP")
        writer.write(data[:50])
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(data[50:])
        await writer.drain()
        first, flow = await inbox.next()
        second, _ = await inbox.next()
        assert (first.call_id, second.call_id) == ("z9hG4bKt1@127.0.0.1", "z9hG4bKt2@127.0.0.1")
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"  # pong to the double-CRLF ping
        assert isinstance(first, SipRequest)
        transport.send(make_response(first, 200), flow)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert head.startswith(b"SIP/2.0 200 OK\r\n")
    finally:
        writer.close()


async def test_tcp_message_without_content_length_gets_400_and_the_connection_closes(
    layer: tuple[TransportLayer, Inbox],
) -> None:
    transport, inbox = layer
    _, port = await transport.listen(Transport.TCP, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(options(transport="TCP").replace(b"Content-Length: 0\r\n", b""))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 2)  # read to EOF: the edge closes
        assert answer.startswith(b"SIP/2.0 400 Missing Content-Length on stream\r\n")
        assert inbox.queue.empty()
    finally:
        writer.close()


async def test_tls_listener_serves_tls12_clients_without_asking_for_a_certificate(
    layer: tuple[TransportLayer, Inbox], tmp_path: Path
) -> None:
    transport, inbox = layer
    cert, key = make_certificate(tmp_path)
    _, port = await transport.listen(Transport.TLS, "127.0.0.1", 0, server_tls_context(str(cert), str(key)))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    try:
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
        writer.write(options(transport="TLS"))
        await writer.drain()
        request, flow = await inbox.next()
        assert flow.transport is Transport.TLS
        assert isinstance(request, SipRequest)
        transport.send(make_response(request, 200), flow)
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)).startswith(b"SIP/2.0 200 OK")
    finally:
        writer.close()


async def test_outbound_tls_reuses_one_connection_and_accepts_a_wildcard_certificate(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    inbox = Inbox()
    server = TransportLayer(inbox, TransportSettings(public_host="127.0.0.1"))
    # Verification on, with the self-signed certificate as the CA: *.example.test covers the name.
    client = TransportLayer(
        Inbox(), TransportSettings(public_host="127.0.0.1", tls_verify=True, tls_ca_file=str(cert))
    )
    try:
        _, port = await server.listen(Transport.TLS, "127.0.0.1", 0, server_tls_context(str(cert), str(key)))
        target = Target(Transport.TLS, "127.0.0.1", port, "sip.example.test")
        client.send(SipRequest.parse(options(transport="TLS")), target)
        client.send(SipRequest.parse(options(branch="z9hG4bKt2", transport="TLS")), target)
        (_, first), (_, second) = await inbox.next(), await inbox.next()
        assert first.connection is second.connection
        assert first.remote == second.remote
    finally:
        await client.close()
        await server.close()


def test_the_default_client_context_does_not_verify_and_needs_tls12() -> None:
    context = client_tls_context()
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


async def test_connection_refused_is_reported_to_the_sender(layer: tuple[TransportLayer, Inbox]) -> None:
    transport, _ = layer
    from activecall.testing.redis_server import free_port

    errors: list[TransportError] = []
    transport.send(
        SipRequest.parse(options(transport="TCP")),
        Target(Transport.TCP, "127.0.0.1", free_port()),
        errors.append,
    )
    for _ in range(100):
        if errors:
            break
        await asyncio.sleep(0.01)
    assert len(errors) == 1
    assert "cannot connect to 127.0.0.1" in str(errors[0])


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:192.0.2.1", (Transport.UDP, "192.0.2.1", 5060)),
        ("sip:192.0.2.1:5080;transport=tcp", (Transport.TCP, "192.0.2.1", 5080)),
        ("sip:192.0.2.1;transport=TLS", (Transport.TLS, "192.0.2.1", 5061)),
        ("sips:192.0.2.1", (Transport.TLS, "192.0.2.1", 5061)),
        ("sips:192.0.2.1:5071;transport=tcp", (Transport.TLS, "192.0.2.1", 5071)),
        ("sip:[2001:db8::1]:5062", (Transport.UDP, "2001:db8::1", 5062)),
        ("sip:localhost:5070;transport=tcp", (Transport.TCP, "127.0.0.1", 5070)),
    ],
)
async def test_uri_transport_and_port_select_the_target(
    uri: str, expected: tuple[Transport, str, int]
) -> None:
    targets = await Resolver().resolve(SipUri.parse(uri))
    assert (targets[0].transport, targets[0].host, targets[0].port) == expected
