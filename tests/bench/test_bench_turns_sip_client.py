"""The bench's SIP client against a tiny TLS server playing the system: INVITE, 100, 180, 200 with an
SDES answer, the ACK, then a BYE from the server answered with 200 OK."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from activecall.testing.baresip import make_certificate
from turns.sip import SipClient, parse, parse_sdp_answer, sdp_offer, split_stream

ANSWER_SDP = (
    "v=0\r\no=edge 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 31000 RTP/SAVP 0 101\r\na=rtcp-mux\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyBq\r\n"
)


def reply(request: bytes, status: str, body: str = "", to_tag: str = "edge1") -> bytes:
    message = parse(request)
    headers = [(n, v) for n, v in message.headers if n.lower() in ("via", "from", "call-id", "cseq")]
    headers.append(("To", message.header("To") + (f";tag={to_tag}" if to_tag else "")))
    headers.append(("Contact", "<sip:edge@127.0.0.1;transport=tls>"))
    lines = [f"SIP/2.0 {status}", *(f"{n}: {v}" for n, v in headers), f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body.encode()


def test_call_answer_ack_and_bye_from_the_server(tmp_path: Path) -> None:
    cert, key, _ = make_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def server() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(5)
            buffer = b""

            def next_message() -> bytes:
                nonlocal buffer
                while True:
                    messages, buffer = split_stream(buffer)
                    if messages:
                        buffer = b"".join(messages[1:]) + buffer
                        return messages[0]
                    buffer += tls.recv(65536)

            invite = next_message()
            seen.append(invite)
            for status in ("100 Trying", "180 Ringing"):
                tls.sendall(
                    reply(invite, status, to_tag="") if status.startswith("100") else reply(invite, status)
                )
            tls.sendall(reply(invite, "200 OK", ANSWER_SDP))
            seen.append(next_message())  # the ACK
            invite_message = parse(invite)
            bye = (
                f"BYE sip:bench@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bKedge\r\n"
                f"From: {invite_message.header('To')};tag=edge1\r\nTo: {invite_message.header('From')}\r\n"
                f"Call-ID: {invite_message.header('Call-ID')}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
            )
            tls.sendall(bye.encode())
            seen.append(next_message())  # the 200 to our BYE

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    client = SipClient("127.0.0.1", port, "tester")
    try:
        ok, statuses = client.call(sdp_offer("127.0.0.1", 40000, "KEY"), timeout=5)
        assert statuses == [100, 180, 200] and client.answered_at > 0
        assert parse_sdp_answer(ok.body).port == 31000
        assert client.remote_bye.wait(5)
        thread.join(5)
    finally:
        client.close()
        listener.close()
    invite, ack, ok_to_bye = (parse(m) for m in seen)
    assert invite.method == "INVITE" and "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:KEY" in invite.body
    assert ack.method == "ACK" and ack.header("CSeq") == "1 ACK" and ";tag=edge1" in ack.header("To")
    assert ack.start == "ACK sip:edge@127.0.0.1;transport=tls SIP/2.0"
    assert ok_to_bye.status == 200 and ok_to_bye.header("CSeq") == "1 BYE"
    assert client.hang_up() == 200  # nothing more to send: the server hung up


def test_refused_call_raises(tmp_path: Path) -> None:
    cert, key, _ = make_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def server() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                data += tls.recv(65536)
            tls.sendall(reply(data, "486 Busy Here"))
            tls.recv(1)  # until the client closes

    threading.Thread(target=server, daemon=True).start()
    client = SipClient("127.0.0.1", listener.getsockname()[1], "tester")
    try:
        with pytest.raises(Exception, match="486"):
            client.call(sdp_offer("127.0.0.1", 40000, "KEY"), timeout=5)
    finally:
        client.close()
        listener.close()
