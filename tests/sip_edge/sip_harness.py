"""Helpers of the sip-edge tests: an edge started in the test's event loop, with a fake media worker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activecall.bus import Bus
from activecall.config import Config
from activecall.messages import Message
from activecall.sip_edge.service import SipEdgeService
from activecall.sip_edge.sip.transaction.timers import BaseIntervals
from activecall.sip_edge.sip.transport.transport import Transport
from activecall.testing.media_responder import MediaResponder

SCENARIOS = Path(__file__).parent / "scenarios"
# Our own retransmissions start at 100 ms; SIPp keeps the RFC's 500 ms.
TEST_INTERVALS = BaseIntervals.scaled(0.1)


@dataclass
class EdgeHarness:
    service: SipEdgeService
    responder: MediaResponder
    bus: Bus
    config: Config

    @property
    def edge(self) -> Any:
        return self.service.edge

    def port(self, transport: Transport = Transport.UDP) -> int:
        return self.service.listening[transport][1]

    def target(self, transport: Transport = Transport.UDP) -> str:
        return f"127.0.0.1:{self.port(transport)}"

    async def events(self, call_id: str) -> list[Message]:
        entries = await self.bus.read({self.bus.keys.events(call_id): "0"}, count=1000)
        return [entry.message for entry in entries]

    async def sessions(self, role: str) -> list[Message]:
        entries = await self.bus.read({self.bus.keys.sessions(role): "0"}, count=1000)
        return [entry.message for entry in entries]


EdgeFactory = Callable[..., Awaitable[EdgeHarness]]


# ------------------------------------------------------------------------------------- fakes


class ManualClock:
    """A scheduler whose time moves only when :meth:`advance` is called."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, _Handle]] = []
        self._seq = 0

    def call_later(self, delay: float, callback: Callable[..., object], *args: object) -> _Handle:
        handle = _Handle(callback, args)
        self._seq += 1
        self._queue.append((self.now + delay, self._seq, handle))
        return handle

    def advance(self, seconds: float) -> None:
        """Run, in time order, every callback due within ``seconds`` (including new ones)."""
        until = self.now + seconds
        while True:
            due = [item for item in self._queue if item[0] <= until + 1e-9 and not item[2].cancelled]
            if not due:
                break
            item = min(due, key=lambda i: (i[0], i[1]))
            self._queue.remove(item)
            self.now = max(self.now, item[0])
            item[2].run()
        self.now = until
        self._queue = [item for item in self._queue if not item[2].cancelled]


class _Handle:
    def __init__(self, callback: Callable[..., object], args: tuple[object, ...]) -> None:
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def run(self) -> None:
        self.callback(*self.args)


class RecordingTransport:
    """Stands in for the transport layer: keeps what is sent, with the clock time."""

    def __init__(self, clock: ManualClock | None = None, fail: bool = False) -> None:
        self.clock = clock
        self.fail = fail
        self.handler: Callable[..., None] | None = None
        self.sent: list[tuple[float, Any, Any]] = []

    def send(self, message: Any, dest: Any, on_error: Callable[[Exception], None] | None = None) -> None:
        self.send_bytes(bytes(message), message, dest, on_error)

    def send_bytes(
        self, data: bytes, message: Any, dest: Any, on_error: Callable[[Exception], None] | None = None
    ) -> None:
        from activecall.sip_edge.sip.transport.transport import TransportError

        if self.fail:
            error = TransportError("connection refused")
            if on_error is None:
                raise error
            on_error(error)
            return
        self.sent.append((self.clock.now if self.clock else 0.0, type(message).parse(data), dest))

    def sent_by(self, transport: Any) -> tuple[str, int]:
        return ("192.0.2.10", 5060)

    def times(self, start_line: str) -> list[float]:
        """When messages whose start line begins with ``start_line`` were sent."""
        return [t for t, message, _ in self.sent if message.start_line.startswith(start_line)]

    def messages(self, start_line: str) -> list[Any]:
        return [message for _, message, _ in self.sent if message.start_line.startswith(start_line)]


# ---------------------------------------------------------------------------- sockets and certificates


def make_certificate(folder: Path, names: str = "DNS:*.example.test,IP:127.0.0.1") -> tuple[Path, Path]:
    """A self-signed EC certificate and its key (openssl), valid for ``names``."""
    import subprocess

    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "2", "-nodes", "-subj", "/CN=edge.example.test"]
        + ["-addext", f"subjectAltName={names}"],
        check=True,
        capture_output=True,
    )
    return cert, key


class UdpPeer(asyncio.DatagramProtocol):
    """A raw UDP socket that queues what it receives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls) -> UdpPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))

    async def receive(self, within: float = 2.0) -> bytes:
        return await asyncio.wait_for(self.received.get(), within)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class WebhookServer:
    """A tiny HTTP/1.1 endpoint for the handler's webhook: ``answer(body)`` gives (status, JSON)."""

    def __init__(self, answer: Callable[[dict[str, Any]], Awaitable[tuple[int, Any]]]) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> WebhookServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/inbound"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import json

        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body = json.loads(await reader.readexactly(length)) if length else {}
            self.requests.append(body)
            status, payload = await self.answer(body)
            data = json.dumps(payload).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


AUDIO_OFFER = (
    "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 7078 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
)


class RawPhone:
    """A scripted UDP phone: writes each request by hand and reads what the edge sends back."""

    def __init__(self, peer: UdpPeer, edge_port: int, call_id: str = "raw-1@127.0.0.1") -> None:
        self.peer = peer
        self.edge_port = edge_port
        self.call_id = call_id
        self.cseq = 0
        self.to_tag = ""
        self.invite_branch = ""

    @classmethod
    async def open(cls, edge_port: int, call_id: str = "raw-1@127.0.0.1") -> RawPhone:
        return cls(await UdpPeer.open(), edge_port, call_id)

    def _request(self, method: str, headers: str = "", body: str = "", cseq: int | None = None) -> str:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = f"z9hG4bK{method.lower()}{cseq}"
        if method == "INVITE" and not self.to_tag:
            self.invite_branch = branch
        to_tag = f";tag={self.to_tag}" if self.to_tag else ""
        return (
            f"{method} sip:+15550001111@127.0.0.1:{self.edge_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.peer.port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:+14155550100@127.0.0.1:{self.peer.port}>;tag=phone1\r\n"
            f"To: <sip:+15550001111@127.0.0.1:{self.edge_port}>{to_tag}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:+14155550100@127.0.0.1:{self.peer.port}>\r\n"
            f"{headers}"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )

    def send(self, method: str, headers: str = "", body: str = "", cseq: int | None = None) -> None:
        self.peer.send(self._request(method, headers, body, cseq).encode(), self.edge_port)

    def invite(self, body: str = AUDIO_OFFER, headers: str = "") -> None:
        self.send("INVITE", headers + ("Content-Type: application/sdp\r\n" if body else ""), body)

    def ack(self, cseq: int = 1) -> None:
        self.send("ACK", cseq=cseq)

    async def receive(self, within: float = 3.0) -> Any:
        """The next message from the edge, parsed."""
        from activecall.sip_edge.sip.syntax.message import parse_message

        return parse_message(await self.peer.receive(within))

    async def final(self, within: float = 3.0) -> Any:
        """The next final response (provisional ones are skipped); its To tag is kept."""
        while True:
            message = await self.receive(within)
            if hasattr(message, "status") and message.status >= 200:
                self.to_tag = message.to.tag or self.to_tag
                return message

    async def request(self, method: str, within: float = 3.0) -> Any:
        """The next request of ``method`` from the edge (responses and other requests are skipped)."""
        while True:
            message = await self.receive(within)
            if getattr(message, "method", None) == method:
                return message

    def reply(self, request: Any, status: int) -> None:
        from activecall.sip_edge.sip.syntax.message import make_response

        self.peer.send(bytes(make_response(request, status)), self.edge_port)

    def close(self) -> None:
        self.peer.close()


async def poll(check: Callable[[], Any], within: float = 5.0, every: float = 0.02) -> Any:
    """Call ``check`` (a function or coroutine function) until it returns something true; return it."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{check} never held within {within} s")
        await asyncio.sleep(every)
