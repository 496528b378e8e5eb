"""The bench phone through a media move: a re-INVITE whose offer brings a new address and SRTP key is
answered 200 with our description one version up and moves the call's RTP; a refresh with the same
offer moves nothing; an offer without a usable key is refused 488; a BYE after the server's
connection went away goes out on a new connection."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from activecall.testing.baresip import make_certificate
from turns.caller import Receiver, Sender, follow_offers
from turns.rtp import PCMU, Srtp, build_rtp, inline_key, new_key
from turns.sip import SdpAnswer, SipClient, next_version, parse, parse_sdp_answer, sdp_offer, split_stream

FIRST_KEY = inline_key(bytes(range(30)))
MOVED_KEY = inline_key(bytes(range(100, 130)))


def edge_sdp(port: int, key: str | None, version: int) -> str:
    crypto = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n" if key else ""
    return (
        f"v=0\r\no=edge 7 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0 101\r\na=rtcp-mux\r\n{crypto}"
    )


class Edge:
    """A TLS server playing the system's edge, one message at a time."""

    def __init__(self, tmp_path: Path) -> None:
        cert, key, _ = make_certificate(tmp_path)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(5)
        self.port = self.listener.getsockname()[1]
        self.tls: ssl.SSLSocket | None = None
        self.buffer = b""

    def accept(self) -> None:
        conn, _ = self.listener.accept()
        self.tls = self.context.wrap_socket(conn, server_side=True)
        self.tls.settimeout(5)
        self.buffer = b""

    def receive(self) -> Any:
        assert self.tls is not None
        while True:
            messages, rest = split_stream(self.buffer)
            if messages:
                self.buffer = b"".join(messages[1:]) + rest
                return parse(messages[0])
            self.buffer = rest + self.tls.recv(65536)

    def send(self, text: str) -> None:
        assert self.tls is not None
        self.tls.sendall(text.encode())

    def answer(self, request: Any, status: str, body: str = "") -> None:
        headers = [f"{n}: {v}" for n, v in request.headers if n.lower() in ("via", "from", "call-id", "cseq")]
        headers += [f"To: {request.header('To')};tag=edge1", "Contact: <sip:edge@127.0.0.1;transport=tls>"]
        self.send("\r\n".join([f"SIP/2.0 {status}", *headers, f"Content-Length: {len(body)}", "", ""]) + body)

    def reinvite(self, invite: Any, cseq: int, body: str) -> Any:
        """An in-dialog INVITE to the caller; returns its answer."""
        self.send(
            f"INVITE sip:tester@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bKre{cseq}\r\n"
            f"From: {invite.header('To')};tag=edge1\r\nTo: {invite.header('From')}\r\n"
            f"Call-ID: {invite.header('Call-ID')}\r\nCSeq: {cseq} INVITE\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        )
        return self.receive()

    def close(self) -> None:
        if self.tls is not None:
            self.tls.close()
        self.listener.close()


def test_next_version_raises_only_the_version() -> None:
    offer = sdp_offer("127.0.0.1", 40000, "KEY", session_id=41)
    again = next_version(next_version(offer))
    assert "o=bench 41 43 IN IP4 127.0.0.1" in again
    assert again.replace("41 43", "41 41") == offer
    with pytest.raises(ValueError, match="no o= line"):
        next_version("v=0\r\ns=-\r\n")


def test_reinvite_moves_the_media_and_bye_reconnects(tmp_path: Path) -> None:
    edge = Edge(tmp_path)
    moves: list[SdpAnswer] = []
    replies: dict[str, Any] = {}

    def serve() -> None:
        edge.accept()
        invite = edge.receive()
        edge.answer(invite, "200 OK", edge_sdp(31000, FIRST_KEY, 1))
        edge.receive()  # the ACK
        replies["moved"] = edge.reinvite(invite, 2, edge_sdp(31002, MOVED_KEY, 2))
        replies["refresh"] = edge.reinvite(invite, 3, edge_sdp(31002, MOVED_KEY, 2))
        replies["keyless"] = edge.reinvite(invite, 4, edge_sdp(31004, None, 3))
        assert edge.tls is not None
        edge.tls.close()  # the edge process dies; its successor listens on the same port
        edge.accept()
        bye = edge.receive()
        replies["bye"] = bye
        edge.answer(bye, "200 OK")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    client = SipClient("127.0.0.1", edge.port, "tester")
    client.on_offer = moves.append
    try:
        client.call(sdp_offer("127.0.0.1", 40000, "KEY", session_id=5), timeout=5)
        deadline = time.monotonic() + 5
        while "keyless" not in replies and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.hang_up() == 200
        server.join(5)
    finally:
        client.close()
        edge.close()
    moved, refresh, keyless = replies["moved"], replies["refresh"], replies["keyless"]
    assert moved.status == 200 and moved.header("CSeq") == "2 INVITE"
    assert "o=bench 5 6 IN IP4" in moved.body and "inline:KEY" in moved.body
    assert refresh.status == 200 and "o=bench 5 7 IN IP4" in refresh.body
    assert keyless.status == 488
    assert [(m.port, m.crypto_inline) for m in moves] == [(31002, MOVED_KEY)]
    assert [(method, status) for _, method, status in client.reoffers] == [
        ("INVITE", 200),
        ("INVITE", 200),
        ("INVITE", 488),
    ]
    assert replies["bye"].method == "BYE" and client.reconnects == 1


def test_follow_offers_sends_to_the_new_address_and_decrypts_with_the_new_key() -> None:
    phone, old_leg, new_leg = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
    for sock in (phone, old_leg, new_leg):
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
    first_key, moved_key, phone_key = new_key(), new_key(), new_key()
    receiver = Receiver(phone, Srtp(first_key, outbound=False))
    sender = Sender(phone, old_leg.getsockname(), Srtp(phone_key, outbound=True))
    sip = SimpleNamespace(on_offer=None)
    follow_offers(sip, sender, receiver)  # type: ignore[arg-type]
    receiver.start()
    sender.start()
    try:
        assert old_leg.recv(2048)
        sip.on_offer(parse_sdp_answer(edge_sdp(new_leg.getsockname()[1], inline_key(moved_key), 2)))
        assert new_leg.recv(2048)  # the phone's RTP now reaches the new leg
        # The new leg speaks from a new SSRC with the new key; the phone decrypts it.
        new_srtp = Srtp(moved_key, outbound=True)
        for n in range(3):
            packet = build_rtp(PCMU, n, 160 * n, 0xBEEF, bytes([0x10]) * 160)
            new_leg.sendto(new_srtp.protect(packet), phone.getsockname())
        deadline = time.monotonic() + 5
        while len(receiver.packets) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        for thread in (sender, receiver):
            thread.stop.set()
            thread.join(2)
        for sock in (phone, old_leg, new_leg):
            sock.close()
    assert len(receiver.packets) == 3 and not receiver.errors
    assert len(receiver.rekeyed_at) == 1
