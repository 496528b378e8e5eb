"""Parse and serialize time of a typical INVITE with the SIP message layer (not a test).

Run: .venv/bin/python bench/bench_sip_parser.py [iterations]
"""

from __future__ import annotations

import sys
import timeit

from activecall.sip_edge.sip.syntax.message import SipRequest, StreamFramer, parse_message, validate_request

INVITE = (
    b"INVITE sip:+15551234567@edge.example.com:5060;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-524287-1---8c3a1f0c2e5d;rport\r\n"
    b"Max-Forwards: 69\r\n"
    b"Contact: <sip:+15557654321@198.51.100.7:5060;transport=udp>\r\n"
    b'To: "Support" <sip:+15551234567@edge.example.com>\r\n'
    b'From: "Alice Caller" <sip:+15557654321@carrier.example.net>;tag=7f2b9c01\r\n'
    b"Call-ID: 3c26700f5ad1-9b1e@198.51.100.7\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, UPDATE, PRACK\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: CarrierSBC 4.2\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 238\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=- 3912345678 3912345678 IN IP4 198.51.100.7\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.7\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)


def _per_call_us(stmt: object, number: int) -> float:
    best = min(timeit.repeat(stmt, number=number, repeat=5))  # type: ignore[arg-type]
    return best / number * 1e6


def main() -> None:
    number = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest) and len(request.body) == 238
    framer = StreamFramer()

    def parse() -> None:
        parse_message(INVITE)

    def serialize() -> None:
        bytes(request)

    def parse_serialize() -> None:
        bytes(parse_message(INVITE))

    def parse_validate() -> None:
        message = parse_message(INVITE)
        assert isinstance(message, SipRequest)
        validate_request(message)

    def frame() -> None:
        framer.feed(INVITE)

    for label, stmt in (
        ("parse_message", parse),
        ("bytes(msg)", serialize),
        ("parse + serialize", parse_serialize),
        ("parse + validate_request", parse_validate),
        ("StreamFramer.feed", frame),
    ):
        print(f"{label:26} {_per_call_us(stmt, number):8.1f} us per INVITE ({len(INVITE)} bytes)")


if __name__ == "__main__":
    main()
