"""SIP transports: UDP, TCP and TLS (RFC 3261 section 18, RFC 3581 rport, RFC 5626 keep-alives).

The transport layer owns the sockets. It hands every parsed message up with the :class:`Flow` it came
on, stamps ``received``/``rport`` on the top Via of incoming requests, answers a malformed request
with 400 when its transaction can be named (``MalformedMessage.partial``) and drops the rest, counting
them. Responses go back on the connection their request used (streams) or to the Via's
``received``/``rport`` (UDP). Outbound requests go to a resolved :class:`Target`; stream connections
are opened on demand and reused per remote address.

TLS: at least TLS 1.2; the server never asks for a client certificate (carriers' certificates lack
the clientAuth purpose). Outbound TLS does not verify the peer by default, because trunks present
wildcard and carrier-internal certificates; pass ``tls_verify=True`` to check the chain and the name
(OpenSSL's matching accepts wildcards).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import ssl
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

from activecall.sip_edge import metrics
from activecall.sip_edge.sip.syntax.message import (
    KEEPALIVE_PONG,
    MAX_DATAGRAM_SIZE,
    MAX_STREAM_MESSAGE_SIZE,
    KeepAlive,
    MalformedMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    make_response,
    parse_message,
    validate_response,
)

log = logging.getLogger("activecall.sip_edge.sip.transport.transport")

SipMessage = SipRequest | SipResponse

DEFAULT_SIP_PORT = 5060
DEFAULT_SIPS_PORT = 5061
STATUS_BAD_REQUEST = 400
CONNECT_TIMEOUT = 4.0
IDLE_TIMEOUT = 900.0
_WILDCARDS = ("", "0.0.0.0", "::")


class TransportError(Exception):
    """A message could not be sent: no route, connection refused or lost (maps to 503)."""


class Transport(enum.StrEnum):
    """Transport names as written in Via (RFC 3261 section 20.42)."""

    UDP = "UDP"
    TCP = "TCP"
    TLS = "TLS"

    @property
    def reliable(self) -> bool:
        return self is not Transport.UDP

    @property
    def default_port(self) -> int:
        """RFC 3261 section 19.1.2: 5061 for TLS, 5060 otherwise."""
        return DEFAULT_SIPS_PORT if self is Transport.TLS else DEFAULT_SIP_PORT

    @property
    def uri_param(self) -> str:
        """The ``transport=`` URI parameter value (RFC 3261 section 19.1.1)."""
        return self.value.lower()

    @classmethod
    def from_name(cls, name: str) -> Transport:
        try:
            return cls(name.upper())
        except ValueError:
            raise TransportError(f"unsupported transport {name!r}") from None


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved destination: transport, IP address, port, and the name to present for TLS SNI."""

    transport: Transport
    host: str
    port: int
    server_name: str = ""

    @property
    def key(self) -> tuple[Transport, str, int]:
        return (self.transport, self.host, self.port)


@dataclass(frozen=True, slots=True, eq=False)
class Flow:
    """Where a message came from: the transport, both addresses, and the connection of a stream."""

    transport: Transport
    remote: tuple[str, int]
    local: tuple[str, int]
    connection: StreamConnection | None = field(default=None, repr=False)

    @property
    def target(self) -> Target:
        return Target(self.transport, self.remote[0], self.remote[1])

    @property
    def open(self) -> bool:
        """True while the flow can carry a message: UDP always, a stream while connected."""
        return self.connection is None or not self.connection.closed


# Where a request goes: a resolved address, or back along the flow a dialog arrived on.
Destination = Target | Flow
MessageHandler = Callable[[SipMessage, Flow], None]
ErrorCallback = Callable[[TransportError], None]


@dataclass(frozen=True)
class TransportSettings:
    """Limits and TLS choices of the transport layer."""

    max_datagram_size: int = MAX_DATAGRAM_SIZE
    max_stream_message_size: int = MAX_STREAM_MESSAGE_SIZE
    connect_timeout: float = CONNECT_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    # The address written in Via and Contact when the bound address is a wildcard; "" guesses one.
    public_host: str = ""
    tls_verify: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""


def server_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context that never requests a client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_NONE
    return context


def client_tls_context(
    verify: bool = False, ca_file: str = "", cert_file: str = "", key_file: str = ""
) -> ssl.SSLContext:
    """A TLS 1.2+ client context. Without ``verify`` the peer is not checked (see the module doc)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        if ca_file:
            context.load_verify_locations(ca_file)
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file and key_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def guess_local_ip() -> str:
    """The address of the interface that routes to the Internet (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address: str = probe.getsockname()[0]
            return address
        except OSError:
            return "127.0.0.1"


def stamp_via(request: SipRequest, host: str, port: int) -> None:
    """Add ``received`` (and the ``rport`` value the client asked for) to the top Via of an incoming
    request (RFC 3261 section 18.2.1, RFC 3581 section 4)."""
    via = request.top_via
    if via.host == host and not via.rport_requested:
        return
    request.replace_top_via(via.with_received(host, port))


def response_target(response: SipResponse, flow: Flow) -> Target:
    """Where a response goes over UDP, or over a new connection when the request's one closed
    (RFC 3261 section 18.2.2, RFC 3581 section 4)."""
    if flow.transport is Transport.UDP:
        first = (response.headers.get("Via") or "").split(",", 1)[0].lower()
        if "rport=" in first and "maddr" not in first:
            return flow.target  # the common case, without parsing the Via again
    via = response.top_via
    transport = Transport.from_name(via.transport)
    host = via.received or via.host
    if flow.transport is Transport.UDP and via.rport_requested:
        return Target(transport, flow.remote[0], flow.remote[1])
    return Target(transport, host, via.rport or via.port or transport.default_port)


class _UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer) -> None:
        self.layer = layer
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not every loop's datagram transport subclasses DatagramTransport (the selector one does not).
        self.transport = typing.cast(asyncio.DatagramTransport, transport)
        self.local = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        remote = (str(addr[0]), addr[1])
        self.layer._on_datagram(self, data, remote)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors of earlier datagrams; the transactions retransmit or time out.
        log.debug("udp error", extra={"error": str(exc)})

    def sendto(self, data: bytes, remote: tuple[str, int]) -> None:
        if self.transport is None or self.transport.is_closing():
            raise TransportError("UDP socket closed")
        self.transport.sendto(data, remote)


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, inbound or outbound, framed by Content-Length."""

    def __init__(self, layer: TransportLayer, transport: Transport, remote: tuple[str, int]) -> None:
        self.layer = layer
        self.kind = transport
        self.remote = remote
        self.local: tuple[str, int] = ("", 0)
        self.framer = StreamFramer(layer.settings.max_stream_message_size)
        self.closed = False
        self.last_activity = 0.0
        self._transport: asyncio.Transport | None = None
        self._pending: list[tuple[bytes, ErrorCallback | None]] = []
        self.flow = Flow(transport, remote, self.local, self)

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self.closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = (str(peer[0]), peer[1]) if peer else self.remote
        self.local = transport.get_extra_info("sockname")[:2]
        self.flow = Flow(self.kind, self.remote, self.local, self)
        self.last_activity = self.layer.now()
        self.layer._register(self)
        pending, self._pending = self._pending, []
        for data, _ in pending:
            self._transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.layer.now()
        try:
            items = self.framer.feed(data)
        except MalformedMessage as exc:
            self.layer._stream_broken(self, exc)
            return
        for item in items:
            if item is KeepAlive.PING:
                self.write(KEEPALIVE_PONG)
            elif isinstance(item, MalformedMessage):
                self.layer._malformed(item, self.flow)
            elif isinstance(item, SipRequest | SipResponse):
                self.layer._deliver(item, self.flow)
        if self.framer.broken:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.layer._unregister(self)
        self._fail_pending(TransportError(f"connection to {self.remote[0]}:{self.remote[1]} lost"))

    def write(self, data: bytes, on_error: ErrorCallback | None = None) -> None:
        if self.closed:
            error = TransportError(f"connection to {self.remote[0]}:{self.remote[1]} is closed")
            if on_error is None:
                raise error
            on_error(error)
            return
        if self._transport is None:
            self._pending.append((data, on_error))
            return
        self.last_activity = self.layer.now()
        self._transport.write(data)

    def fail(self, error: TransportError) -> None:
        """The connection could not be opened: report every queued message."""
        self.closed = True
        self.layer._unregister(self)
        self._fail_pending(error)

    def _fail_pending(self, error: TransportError) -> None:
        pending, self._pending = self._pending, []
        for _, on_error in pending:
            if on_error is not None:
                on_error(error)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self.closed = True


class TransportLayer:
    """The sockets of one SIP endpoint; ``handler`` receives every parsed message."""

    def __init__(
        self, handler: MessageHandler | None = None, settings: TransportSettings | None = None
    ) -> None:
        self.handler = handler
        self.settings = settings or TransportSettings()
        self._udp: list[_UdpEndpoint] = []
        self._servers: list[asyncio.Server] = []
        self._connections: dict[tuple[Transport, str, int], StreamConnection] = {}
        self._advertised: dict[Transport, tuple[str, int]] = {}
        self._client_tls: ssl.SSLContext | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifecycle

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def listen(
        self, transport: Transport, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> tuple[str, int]:
        """Bind a listener; returns the bound address (``port`` 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        if transport is Transport.UDP:
            _, endpoint = await loop.create_datagram_endpoint(
                lambda: _UdpEndpoint(self), local_addr=(host, port)
            )
            self._udp.append(endpoint)
            bound = endpoint.local
        else:
            if transport is Transport.TLS and tls is None:
                raise TransportError("a TLS listener needs a server context")
            server = await loop.create_server(
                lambda: StreamConnection(self, transport, ("", 0)),
                host,
                port,
                ssl=tls if transport is Transport.TLS else None,
                reuse_address=True,
            )
            self._servers.append(server)
            bound = server.sockets[0].getsockname()[:2]
        self._advertised.setdefault(transport, (self._public_host(bound[0]), bound[1]))
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_idle(), name="sip-idle-sweeper")
        log.info(
            "%s SIP transport started",
            transport.value,
            extra={"transport": transport.value, "address": f"{bound[0]}:{bound[1]}"},
        )
        return (str(bound[0]), int(bound[1]))

    def _public_host(self, bound_host: str) -> str:
        if self.settings.public_host:
            return self.settings.public_host
        return guess_local_ip() if bound_host in _WILDCARDS else bound_host

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for server in self._servers:
            server.close()
        for connection in list(self._connections.values()):
            connection.close()
        for endpoint in self._udp:
            if endpoint.transport is not None:
                endpoint.transport.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        self._udp.clear()

    # ---------------------------------------------------------------- addresses

    def sent_by(self, transport: Transport) -> tuple[str, int]:
        """Host and port to write in Via and Contact for ``transport``."""
        found = self._advertised.get(transport) or next(iter(self._advertised.values()), None)
        return found or (self._public_host(""), transport.default_port)

    @property
    def client_tls(self) -> ssl.SSLContext:
        if self._client_tls is None:
            s = self.settings
            self._client_tls = client_tls_context(
                s.tls_verify, s.tls_ca_file, s.tls_cert_file, s.tls_key_file
            )
        return self._client_tls

    # ---------------------------------------------------------------- sending

    def send(self, message: SipMessage, dest: Target | Flow, on_error: ErrorCallback | None = None) -> None:
        """Send ``message``; failures are passed to ``on_error`` (raised if there is none)."""
        try:
            self._send(bytes(message), message, dest, on_error)
        except TransportError as exc:
            if on_error is None:
                raise
            on_error(exc)

    def send_bytes(
        self, data: bytes, message: SipMessage, dest: Target | Flow, on_error: ErrorCallback | None = None
    ) -> None:
        """Like :meth:`send` with the message already serialized (retransmissions)."""
        try:
            self._send(data, message, dest, on_error)
        except TransportError as exc:
            if on_error is None:
                raise
            on_error(exc)

    def _send(
        self, data: bytes, message: SipMessage, dest: Target | Flow, on_error: ErrorCallback | None
    ) -> None:
        if isinstance(dest, Flow):
            if dest.transport is Transport.UDP:
                target = response_target(message, dest) if isinstance(message, SipResponse) else dest.target
                self._udp_endpoint(dest.local).sendto(data, (target.host, target.port))
                return
            if dest.connection is not None and not dest.connection.closed:
                dest.connection.write(data, on_error)
                return
            if not isinstance(message, SipResponse):
                raise TransportError("the connection of this flow is closed")
            dest = response_target(message, dest)
        if dest.transport is Transport.UDP:
            self._udp_endpoint(None).sendto(data, (dest.host, dest.port))
            return
        self.connection(dest).write(data, on_error)

    def _udp_endpoint(self, local: tuple[str, int] | None) -> _UdpEndpoint:
        if not self._udp:
            raise TransportError("no UDP listener")
        if local is not None:
            for endpoint in self._udp:
                if endpoint.local == local:
                    return endpoint
        return self._udp[0]

    def connection(self, target: Target) -> StreamConnection:
        """The open connection to ``target``, or a new one (messages queue until it is up)."""
        existing = self._connections.get(target.key)
        if existing is not None and not existing.closed:
            return existing
        connection = StreamConnection(self, target.transport, (target.host, target.port))
        self._connections[target.key] = connection
        task = asyncio.create_task(self._open(connection, target), name=f"sip-connect-{target.host}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return connection

    async def _open(self, connection: StreamConnection, target: Target) -> None:
        loop = asyncio.get_running_loop()
        tls = self.client_tls if target.transport is Transport.TLS else None
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: connection,
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=(target.server_name or target.host) if tls else None,
                ),
                self.settings.connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.info(
                "connect failed",
                extra={"target": f"{target.transport}:{target.host}:{target.port}", "error": str(exc)},
            )
            connection.fail(TransportError(f"cannot connect to {target.host}:{target.port}: {exc}"))

    def _register(self, connection: StreamConnection) -> None:
        key = (connection.kind, connection.remote[0], connection.remote[1])
        self._connections.setdefault(key, connection)

    def _unregister(self, connection: StreamConnection) -> None:
        for key, existing in list(self._connections.items()):
            if existing is connection:
                del self._connections[key]

    async def _sweep_idle(self) -> None:
        interval = max(1.0, min(60.0, self.settings.idle_timeout / 2))
        while True:
            await asyncio.sleep(interval)
            deadline = self.now() - self.settings.idle_timeout
            for connection in list(self._connections.values()):
                if connection.connected and connection.last_activity < deadline:
                    connection.close()

    # ---------------------------------------------------------------- receiving

    def _on_datagram(self, endpoint: _UdpEndpoint, data: bytes, remote: tuple[str, int]) -> None:
        flow = Flow(Transport.UDP, remote, endpoint.local)
        if data in (b"\r\n\r\n", b"\r\n", b"\x00\x00\x00\x00"):
            return  # keep-alives some clients send over UDP
        try:
            message = parse_message(data, self.settings.max_datagram_size)
        except MalformedMessage as exc:
            self._malformed(exc, flow)
            return
        self._deliver(message, flow)

    def _deliver(self, message: SipMessage, flow: Flow) -> None:
        try:
            if isinstance(message, SipRequest):
                stamp_via(message, flow.remote[0], flow.remote[1])
            else:
                problem = validate_response(message)
                if problem is not None:
                    raise SipParseError(problem)
        except SipParseError as exc:
            partial = message if isinstance(message, SipRequest) else None
            self._malformed(MalformedMessage(exc.reason, partial), flow)
            return
        if self.handler is None:
            return
        try:
            self.handler(message, flow)
        except Exception:
            # One bad message must never take the listener down.
            log.exception(
                "error handling a SIP message", extra={"remote": f"{flow.remote[0]}:{flow.remote[1]}"}
            )

    def _malformed(self, error: MalformedMessage, flow: Flow) -> None:
        metrics.PARSE_ERRORS.labels(flow.transport.value).inc()
        partial = error.partial
        log.info(
            "malformed SIP message",
            extra={
                "reason": error.reason,
                "remote": f"{flow.remote[0]}:{flow.remote[1]}",
                "answered": bool(partial),
            },
        )
        if not isinstance(partial, SipRequest) or partial.method == "ACK":
            return
        try:
            response = make_response(partial, STATUS_BAD_REQUEST, error.reason)
            data = bytes(response)
            if flow.transport is Transport.UDP:
                self._udp_endpoint(flow.local).sendto(data, flow.remote)
            elif flow.connection is not None:
                flow.connection.write(data)
        except (SipParseError, TransportError, ValueError) as exc:
            log.debug("could not answer a malformed request", extra={"error": str(exc)})

    def _stream_broken(self, connection: StreamConnection, error: MalformedMessage) -> None:
        self._malformed(error, connection.flow)
        connection.close()
