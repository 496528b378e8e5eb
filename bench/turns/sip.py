"""A minimal SIP user agent client over TLS (RFC 3261) with an SDES SRTP offer (RFC 4566, 4568).

Enough for one call to a server that answers: INVITE, the provisional and final responses, ACK, BYE
either way, and 200 OK to anything in-dialog the server asks (BYE, OPTIONS, a session-timer refresh).
A re-INVITE or UPDATE whose offer moves the media (a new address, port or key, RFC 3264 section 8,
RFC 4568 section 7.1.4) is answered with our description one version up and handed to ``on_offer``.
When the server's connection is gone, the next request goes out on a new one (RFC 3261 section 18.1.1).
Messages are framed on the stream by Content-Length (RFC 3261 section 18.3).
"""

from __future__ import annotations

import queue
import secrets
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

USER_AGENT = "active-call-bench-turns/1"
TELEPHONE_EVENT_PT = 101
SUITE = "AES_CM_128_HMAC_SHA1_80"
MAX_MESSAGE = 65536


# ------------------------------------------------------------------------------------------ messages


@dataclass
class SipMessage:
    start: str  # request line or status line
    headers: list[tuple[str, str]]
    body: str = ""

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0] if self.is_request else ""

    @property
    def status(self) -> int:
        return 0 if self.is_request else int(self.start.split(" ", 2)[1])

    def header(self, name: str) -> str:
        """The first value of a header (long or compact name), or ''."""
        wanted = {name.lower(), COMPACT.get(name.lower(), name.lower())}
        return next((v for n, v in self.headers if n.lower() in wanted), "")

    def all(self, name: str) -> list[str]:
        wanted = {name.lower(), COMPACT.get(name.lower(), name.lower())}
        return [v for n, v in self.headers if n.lower() in wanted]

    @property
    def cseq_method(self) -> str:
        return self.header("CSeq").split()[-1].upper() if self.header("CSeq") else ""


COMPACT = {"via": "v", "from": "f", "to": "t", "call-id": "i", "contact": "m", "content-length": "l",
           "content-type": "c"}  # fmt: skip


def render(start: str, headers: list[tuple[str, str]], body: str = "") -> bytes:
    encoded = body.encode()
    lines = [start, *(f"{n}: {v}" for n, v in headers), f"Content-Length: {len(encoded)}", "", ""]
    return "\r\n".join(lines).encode() + encoded


def parse(data: bytes) -> SipMessage:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return SipMessage(lines[0], headers, body.decode("utf-8", "replace"))


def split_stream(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete messages at the front of ``buffer`` (keep-alive CRLFs dropped) and the rest."""
    messages = []
    while True:
        buffer = buffer.lstrip(b"\r\n")
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return messages, buffer
        length = 0
        for line in buffer[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() in (b"content-length", b"l"):
                length = int(value.strip() or b"0")
        total = end + 4 + length
        if len(buffer) < total:
            return messages, buffer
        messages.append(buffer[:total])
        buffer = buffer[total:]


def sdp_offer(address: str, port: int, key_inline: str, session_id: int | None = None) -> str:
    """PCMU + telephone-event, 20 ms, SRTP with one AES_CM_128_HMAC_SHA1_80 key, rtcp-mux."""
    sid = session_id if session_id is not None else secrets.randbelow(1 << 31)
    return "\r\n".join([
        "v=0",
        f"o=bench {sid} {sid} IN IP4 {address}",
        "s=bench-turns",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/SAVP 0 {TELEPHONE_EVENT_PT}",
        "a=rtpmap:0 PCMU/8000",
        f"a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/8000",
        f"a=fmtp:{TELEPHONE_EVENT_PT} 0-16",
        "a=ptime:20",
        "a=sendrecv",
        "a=rtcp-mux",
        f"a=crypto:1 {SUITE} inline:{key_inline}",
        "",
    ])  # fmt: skip


def next_version(sdp: str) -> str:
    """``sdp`` with the o= session version one up: our answer to a re-offer is a new version of our
    description, keeping the session id (RFC 3264 section 8)."""
    lines = sdp.split("\r\n")
    for i, line in enumerate(lines):
        if line.startswith("o="):
            fields = line[2:].split(" ")
            if len(fields) != 6 or not fields[2].isdigit():
                raise ValueError(f"bad origin line {line!r}")
            fields[2] = str(int(fields[2]) + 1)
            lines[i] = "o=" + " ".join(fields)
            return "\r\n".join(lines)
    raise ValueError("no o= line in the description")


@dataclass(frozen=True)
class SdpAnswer:
    address: str
    port: int
    payload_types: tuple[int, ...]
    crypto_inline: str  # the key after inline:, with any |lifetime
    rtcp_mux: bool


def parse_sdp_answer(text: str) -> SdpAnswer:
    """The first audio stream of an answer (or of a re-offer): where to send, its payload types and
    its SRTP key."""
    session_address, media_address = "", ""
    port, payload_types, crypto, mux, in_audio = 0, (), "", False, False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if in_audio:
                break
            parts = line[2:].split()
            in_audio = parts[0] == "audio"
            if in_audio:
                port, payload_types = int(parts[1]), tuple(int(p) for p in parts[3:])
        elif line.startswith("c="):
            address = line.split()[-1]
            if in_audio:
                media_address = address
            else:
                session_address = address
        elif in_audio and line.startswith("a=crypto:"):
            tag_suite_key = line[len("a=crypto:") :].split()
            if len(tag_suite_key) >= 3 and tag_suite_key[1] == SUITE and not crypto:
                crypto = tag_suite_key[2].removeprefix("inline:")
        elif in_audio and line == "a=rtcp-mux":
            mux = True
    if not port:
        raise ValueError("no audio stream accepted in the answer")
    if not crypto:
        raise ValueError(f"no {SUITE} key in the answer")
    return SdpAnswer(media_address or session_address, port, payload_types, crypto, mux)


def branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


@dataclass
class Dialog:
    """What the requests of one call share."""

    local_address: str
    local_port: int
    server: str  # host:port of the TLS listener
    user: str
    callee: str = "bench"
    call_id: str = field(default_factory=lambda: secrets.token_hex(12) + "@bench")
    from_tag: str = field(default_factory=lambda: secrets.token_hex(6))
    to_tag: str = ""
    cseq: int = 1
    remote_target: str = ""  # the Contact of the 200 OK
    route: list[str] = field(default_factory=list)

    @property
    def request_uri(self) -> str:
        return f"sip:{self.callee}@{self.server};transport=tls"

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{self.local_address}:{self.local_port};transport=tls>"

    def via(self, branch_id: str) -> str:
        return f"SIP/2.0/TLS {self.local_address}:{self.local_port};branch={branch_id};rport"

    def _common(self, branch_id: str, cseq: int, method: str) -> list[tuple[str, str]]:
        to = f"<sip:{self.callee}@{self.server}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        return [
            ("Via", self.via(branch_id)),
            ("Max-Forwards", "70"),
            ("From", f'"{self.user}" <sip:{self.user}@{self.local_address}>;tag={self.from_tag}'),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]

    def invite(self, sdp: str) -> tuple[bytes, str]:
        branch_id = branch()
        headers = [
            *self._common(branch_id, self.cseq, "INVITE"),
            ("Contact", self.contact),
            ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"),
            ("User-Agent", USER_AGENT),
            ("Content-Type", "application/sdp"),
        ]
        return render(f"INVITE {self.request_uri} SIP/2.0", headers, sdp), branch_id

    def ack(self) -> bytes:
        """ACK of a 2xx: a new transaction with the INVITE's CSeq number."""
        target = self.remote_target or self.request_uri
        headers = self._common(branch(), self.cseq, "ACK") + [("Route", r) for r in self.route]
        return render(f"ACK {target} SIP/2.0", headers)

    def bye(self) -> bytes:
        self.cseq += 1
        target = self.remote_target or self.request_uri
        headers = self._common(branch(), self.cseq, "BYE") + [("Route", r) for r in self.route]
        return render(f"BYE {target} SIP/2.0", [*headers, ("User-Agent", USER_AGENT)])

    def established(self, ok: SipMessage) -> None:
        """Learn the dialog from the INVITE's 2xx: the To tag, the remote target, the route set."""
        to = ok.header("To")
        if ";tag=" in to:
            self.to_tag = to.split(";tag=", 1)[1].split(";", 1)[0].strip()
        contact = ok.header("Contact")
        if contact:
            self.remote_target = contact.split("<", 1)[1].split(">", 1)[0] if "<" in contact else contact
        self.route = list(reversed(ok.all("Record-Route")))


def response(request: SipMessage, status: int, reason: str, body: str = "", contact: str = "") -> bytes:
    """A response to ``request`` with its Via, From, To, Call-ID and CSeq."""
    headers = [(n, v) for n, v in request.headers if n.lower() in ("via", "v", "from", "f", "to", "t",
               "call-id", "i", "cseq", "record-route")]  # fmt: skip
    if contact:
        headers.append(("Contact", contact))
    if body:
        headers.append(("Content-Type", "application/sdp"))
    headers.append(("User-Agent", USER_AGENT))
    return render(f"SIP/2.0 {status} {reason}", headers, body)


# ------------------------------------------------------------------------------------------ the client


def _media_of(body: str) -> SdpAnswer | None:
    try:
        return parse_sdp_answer(body) if body else None
    except ValueError:
        return None


class CallFailed(Exception):
    pass


class SipClient:
    """One call over TLS. A reader thread answers the server's requests and queues responses;
    ``answered_at`` is the monotonic time the 200 OK of the INVITE was read. ``on_offer`` gets the
    media of each re-offer that changes it, after our 200 went out; ``reoffers`` lists (arrival,
    method, our status) of every in-dialog INVITE and UPDATE."""

    def __init__(self, host: str, port: int, user: str, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = self._connect()
        local = self.sock.getsockname()
        self.dialog = Dialog(local[0], local[1], f"{host}:{port}", user)
        self.responses: queue.Queue[tuple[float, SipMessage]] = queue.Queue()
        self.remote_bye = threading.Event()
        self.answered_at = 0.0
        self.offer = ""
        self.on_offer: Callable[[SdpAnswer], None] | None = None
        self.reoffers: list[tuple[float, str, int]] = []
        self.reconnects = 0
        self._media: SdpAnswer | None = None  # what the server's last description said
        self._lock = threading.Lock()  # one TLS object: a read or a write at a time
        self._stop = threading.Event()
        self._reader = self._start_reader()

    def _connect(self) -> ssl.SSLSocket:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the system's certificate is self-signed
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock = context.wrap_socket(raw)
        sock.settimeout(5.0)
        return sock

    def _start_reader(self) -> threading.Thread:
        reader = threading.Thread(target=self._read, args=(self.sock,), name="sip-reader", daemon=True)
        reader.start()
        return reader

    def send(self, data: bytes) -> None:
        """On the connection, or on a new one when the server's end has gone (a restarted server)."""
        with self._lock:
            if self._reader.is_alive():
                try:
                    self.sock.sendall(data)
                    return
                except OSError:
                    pass
            self._reconnect()
            self.sock.sendall(data)

    def _reconnect(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=1.0)
        self.sock = self._connect()
        self.reconnects += 1
        self._reader = self._start_reader()

    def _read(self, sock: ssl.SSLSocket) -> None:
        """Waits for data without the lock (select), then reads what is there under it: one TLS
        object must not be read and written at the same time."""
        buffer = b""
        while not self._stop.is_set():
            try:
                if not sock.pending() and not select.select([sock], [], [], 0.05)[0]:
                    continue
                with self._lock:
                    sock.setblocking(False)
                    try:
                        chunk = sock.recv(MAX_MESSAGE)
                    finally:
                        sock.settimeout(5.0)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                continue
            except (OSError, ValueError):
                return
            now = time.monotonic()
            if not chunk:
                return
            messages, buffer = split_stream(buffer + chunk)
            for data in messages:
                message = parse(data)
                if message.is_request:
                    self._answer(message, now)
                else:
                    self.responses.put((now, message))

    def _answer(self, request: SipMessage, arrived: float) -> None:
        if request.method == "ACK":
            return
        if request.method in ("INVITE", "UPDATE") and request.body:
            self._answer_offer(request, arrived)
            return
        body = self.offer if request.method in ("INVITE", "UPDATE") else ""
        self.send(response(request, 200, "OK", body, self.dialog.contact))
        if request.method == "BYE":
            self.remote_bye.set()

    def _answer_offer(self, request: SipMessage, arrived: float) -> None:
        """A re-offer: 200 with our description one version up, or 488 when it cannot be used."""
        try:
            media = parse_sdp_answer(request.body)
        except ValueError:
            self.reoffers.append((arrived, request.method, 488))
            self.send(response(request, 488, "Not Acceptable Here", contact=self.dialog.contact))
            return
        self.offer = next_version(self.offer)
        self.send(response(request, 200, "OK", self.offer, self.dialog.contact))
        self.reoffers.append((arrived, request.method, 200))
        moved = media != self._media
        self._media = media
        if moved and self.on_offer is not None:
            self.on_offer(media)

    def call(self, sdp: str, timeout: float = 10.0) -> tuple[SipMessage, list[int]]:
        """INVITE until the final response; on 2xx the ACK goes out. Returns the 200 and the statuses
        seen (the provisional ones first)."""
        self.offer = sdp
        invite, _ = self.dialog.invite(sdp)
        self.send(invite)
        statuses: list[int] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CallFailed(f"no final answer to INVITE within {timeout:.0f} s (got {statuses})")
            try:
                at, message = self.responses.get(timeout=left)
            except queue.Empty:
                continue
            if message.cseq_method != "INVITE":
                continue
            statuses.append(message.status)
            if message.status < 200:
                continue
            if message.status >= 300:
                raise CallFailed(f"INVITE refused: {message.start}")
            self.answered_at = at
            self._media = _media_of(message.body)
            self.dialog.established(message)
            self.send(self.dialog.ack())
            return message, statuses

    def hang_up(self, timeout: float = 5.0) -> int:
        """BYE (unless the server already sent one); the status of its answer, 0 if none came."""
        if self.remote_bye.is_set():
            return 200
        self.send(self.dialog.bye())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, message = self.responses.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if message.cseq_method == "BYE" and message.status >= 200:
                return message.status
        return 0

    def close(self) -> None:
        self._stop.set()
        self._reader.join(timeout=2.0)
        try:
            self.sock.close()
        except OSError:
            pass
