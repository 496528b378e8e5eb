"""Robustness of the SIP message layer: generated and mutated messages only ever raise SipParseError.

A seeded mutation loop throws 100,000 variants of the RFC 4475 torture messages and of typical call
messages at parse_message and StreamFramer; hypothesis generates well-formed requests (which must parse
to exactly what was generated) and free-form header sections. Every message that parses must also print
and parse back to the same bytes, and the UAS checks must answer it without raising.
"""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activecall.sip_edge.sip.syntax.headers import COMPACT_FORMS
from activecall.sip_edge.sip.syntax.message import (
    MalformedMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    make_response,
    parse_message,
    validate_request,
    validate_response,
)
from activecall.sip_edge.sip.syntax.uri import SipUri

SEED = 4475
MUTATED_INPUTS = 100_000
VECTORS = Path(__file__).parent / "vectors" / "rfc4475"

TYPICAL_INVITE = (
    b"INVITE sip:+15551234567@edge.example.com:5060;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-524287-1---8c3a1f0c2e5d;rport\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::7]:5061;branch=z9hG4bKa1;received=2001:db8::8\r\n"
    b"Max-Forwards: 69\r\n"
    b'Contact: "Alice" <sip:+15557654321@198.51.100.7:5060;transport=udp>;expires=60, <tel:+1555>\r\n'
    b'To: "Support" <sip:+15551234567@edge.example.com>\r\n'
    b'From: "Alice \\"A\\" Caller" <sip:+15557654321@carrier.example.net>;tag=7f2b9c01\r\n'
    b"Call-ID: 3c26700f5ad1-9b1e@198.51.100.7\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Route: <sip:p1.example.net;lr>, <sip:p2.example.net;lr>\r\n"
    b"Record-Route: <sip:rr.example.net;lr>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, UPDATE, PRACK\r\n"
    b"Supported: replaces,\r\n timer\r\n"
    b'Proxy-Authorization: Digest username="alice", realm="example.net", nonce="abc", uri="sip:x",'
    b' response="0123456789abcdef", qop=auth, nc=00000001, cnonce="xyz"\r\n'
    b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 71\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=- 1 1 IN IP4 198.51.100.7\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.7\r\n"
    b"t=0 0\r\n"
)
TYPICAL_RESPONSE = (
    b"SIP/2.0 401 Unauthorized\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport=5060;received=198.51.100.7\r\n"
    b"To: <sip:+15551234567@edge.example.com>;tag=as1\r\n"
    b"From: <sip:+15557654321@carrier.example.net>;tag=7f2b9c01\r\n"
    b"Call-ID: 3c26700f5ad1-9b1e@198.51.100.7\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b'WWW-Authenticate: Digest realm="example.net", nonce="n1", qop="auth,auth-int", algorithm=MD5\r\n'
    b"l: 0\r\n"
    b"\r\n"
)
INJECTIONS = [
    b"Content-Length: -1",
    b"Content-Length: 99999999999999999999999999",
    b"l: 3",
    b"Via: SIP/2.0/UDP 192.0.2.15;;,;,,",
    b"v: SIP/2.0/UDP [::1;branch=z9hG4bK",
    b"Via: SIP/2.0/UDP h;rport=99999;ttl=999;received=x",
    b"Contact: *",
    b'm: "unterminated <sip:a@b>',
    b"To: <sip:a@b",
    b"From: a, b <sip:x@y>;tag",
    b"CSeq: 99999999999999999999999 INVITE",
    b"CSeq: " + b"0" * 5000 + b"1 INVITE",
    b"Max-Forwards: 256",
    b"Call-ID: a b",
    b"i: x@y@z",
    b"Route: sip:no-brackets",
    b'Record-Route: <sip:a>;x="',
    b"Require: 100rel, ti mer",
    b"Accept: */*, application",
    b"Content-Type: ",
    b"Date: Fri, 01 Jan 2010 16:00:00 EST",
    b'WWW-Authenticate: Digest realm="a, nonce=',
    b" folded continuation",
    b"\t",
    b":",
    b"NoColon",
    b"X-Null: \x00\xff\xfe",
]
SPECIAL_BYTES = b'"<>,;:@%\\ \t\r\n\x00\x7f\x80\xff=?[]/*'


def seeds() -> list[bytes]:
    vectors = sorted(VECTORS.glob("*/*.dat"))
    return [path.read_bytes() for path in vectors] + [TYPICAL_INVITE, TYPICAL_RESPONSE]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(11)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[min(pos, len(buf) - 1)] = rng.choice(SPECIAL_BYTES)
        elif op == 2:
            buf[pos:pos] = bytes(rng.choice(SPECIAL_BYTES) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            del buf[pos : pos + rng.randint(1, 40)]
        elif op == 4:
            del buf[pos:]
        elif op == 5:
            start = rng.randint(0, len(buf))
            buf[pos:pos] = buf[start : start + rng.randint(1, 200)]
        elif op in (6, 7):
            lines = bytes(buf).split(b"\r\n")
            at = rng.randrange(len(lines))
            lines.insert(rng.randint(1, len(lines)), lines[at] if op == 6 else rng.choice(INJECTIONS))
            buf = bytearray(b"\r\n".join(lines))
        elif op == 8:
            hits = [i for i in range(len(buf) - 1) if buf[i : i + 2] == b"\r\n"]
            if hits:
                i = rng.choice(hits)
                buf[i : i + 2] = rng.choice((b"\n", b"\r", b"\r\n\r\n", b"\r\n "))
        elif op == 9:
            buf = bytearray(rng.randbytes(rng.randint(0, 200)))
        else:
            lines = bytes(buf).split(b"\r\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            buf = bytearray(b"\r\n".join(lines))
    return bytes(buf)


ACCESSORS = (
    *("call_id", "cseq", "from_", "to", "vias", "top_via", "max_forwards", "contacts"),
    *("contact_wildcard", "routes", "record_routes", "content_type"),
)


def exercise(message: SipRequest | SipResponse) -> None:
    """Everything a caller does with a parsed message; only SipParseError may come out of accessors."""
    for name in ACCESSORS:
        try:
            getattr(message, name)
        except SipParseError:
            pass
    if isinstance(message, SipRequest):
        verdict = validate_request(message)
        assert verdict is None or 400 <= verdict[0] <= 599
        bytes(make_response(message, 200 if verdict is None else verdict[0], to_tag="t1"))
    else:
        validate_response(message)
    data = bytes(message)
    again = parse_message(data, max_size=1 << 22)
    assert bytes(again) == data
    assert type(again) is type(message)
    assert again.body == message.body


def throw_at_parser(data: bytes) -> bool:
    try:
        message = parse_message(data)
    except MalformedMessage as exc:
        if exc.partial is not None:
            bytes(make_response(exc.partial, 400, exc.reason))
        return False
    exercise(message)
    return True


def throw_at_framer(rng: random.Random, data: bytes) -> int:
    framer = StreamFramer()
    framed = 0
    cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(0, 3)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    try:
        for piece in pieces:
            for item in framer.feed(piece):
                if isinstance(item, SipRequest | SipResponse):
                    bytes(item)
                    framed += 1
    except SipParseError:
        assert framer.broken
    return framed


def test_mutated_messages_only_raise_sip_parse_error() -> None:
    rng = random.Random(SEED)
    corpus = seeds()
    parsed = framed = 0
    for _ in range(MUTATED_INPUTS):
        data = mutate(rng, rng.choice(corpus))
        parsed += throw_at_parser(data)
        # A good message after the mutated one exercises resynchronization too.
        framed += throw_at_framer(rng, data + TYPICAL_RESPONSE)
    print(
        f"\n{MUTATED_INPUTS} mutated messages to parse_message ({parsed} parsed) and to "
        f"StreamFramer ({framed} messages framed)"
    )
    # The mutations must leave enough valid input to reach the deeper layers.
    assert parsed > MUTATED_INPUTS // 10
    assert framed > MUTATED_INPUTS // 10


# -- hypothesis: generated messages ----------------------------------------------------------------------

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
USER_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/"
PARAM_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()[]/:&+$"
WORD_CHARS = TOKEN_CHARS + '()<>:\\"/[]?{}'
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
param_texts = st.text(PARAM_CHARS, min_size=1, max_size=12)
labels = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,8}[a-z0-9])?", fullmatch=True)
hostnames = st.builds(
    lambda parts, top: ".".join([*parts, top]),
    st.lists(labels, max_size=3),
    st.from_regex(r"[a-z]([a-z0-9\-]{0,6}[a-z0-9])?", fullmatch=True),
)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
hosts = st.one_of(hostnames, ipv4, st.sampled_from(["[::1]", "[2001:db8::5]"]))
sip_uris = st.builds(
    SipUri,
    scheme=st.sampled_from(["sip", "sips"]),
    user=st.one_of(st.none(), st.text(USER_CHARS, min_size=1, max_size=16)),
    host=hosts,
    port=st.one_of(st.none(), st.integers(0, 65535)),
    params=st.dictionaries(param_texts, st.one_of(st.none(), param_texts), max_size=3),
)
display_names = st.one_of(
    st.none(),
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12),
)
lws = st.sampled_from(["", " ", "  ", "\t", "\r\n ", " \r\n\t"])
name_styles = st.sampled_from(["long", "compact", "upper", "lower"])


def field_name(style: str, long_name: str) -> str:
    compact = {v: k for k, v in COMPACT_FORMS.items()}.get(long_name)
    if style == "compact" and compact:
        return compact
    return {"upper": long_name.upper(), "lower": long_name.lower()}.get(style, long_name)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    method = draw(tokens)
    uri = draw(sip_uris)
    call_id = draw(st.text(WORD_CHARS, min_size=1, max_size=20)) + draw(
        st.sampled_from(["", "@host.example.com"])
    )
    cseq = draw(st.integers(0, 2**31 - 1))
    branch = "z9hG4bK" + draw(tokens)
    via_host = draw(hosts)
    display = draw(display_names)
    from_uri = draw(sip_uris)
    tag = draw(tokens)
    body = draw(st.binary(max_size=64))
    style = draw(name_styles)
    sep = draw(lws)

    def quoted(text: str) -> str:
        return '"' + "".join("\\" + c if c in '"\\' or c < " " or c == "\x7f" else c for c in text) + '"'

    shown = "" if display is None else quoted(display) + sep
    lines = [
        f"{method} {uri} SIP/2.0",
        f"{field_name(style, 'Via')}{draw(lws).replace(chr(13) + chr(10), '')}:{sep}SIP{sep}/2.0/UDP "
        f"{via_host}{sep};{sep}branch={branch}",
        f"{field_name(style, 'From')}: {shown}<{from_uri}>{sep};tag={tag}",
        f"{field_name(style, 'To')}: <{uri}>",
        f"{field_name(style, 'Call-ID')}: {call_id}",
        f"{field_name(style, 'CSeq')}:{sep}{cseq}{draw(lws) or ' '}{method}",
        "Max-Forwards: 70",
        f"{field_name(style, 'Content-Type')}: application/octet-stream",
        f"{field_name(style, 'Content-Length')}: {len(body)}",
    ]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    expected = {
        "method": method,
        "uri": uri,
        "call_id": call_id,
        "cseq": (cseq, method),
        "branch": branch,
        "via_host": via_host,
        "display": display,
        "from_uri": from_uri,
        "tag": tag,
        "body": body,
    }
    return data, expected


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(requests(), st.lists(st.integers(0, 2000), max_size=4))
def test_generated_requests_parse_exactly(
    generated: tuple[bytes, dict[str, object]], cuts: list[int]
) -> None:
    data, expected = generated
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    assert message.method == expected["method"]
    assert message.uri == expected["uri"]
    assert message.call_id == expected["call_id"]
    assert (message.cseq.number, message.cseq.method) == expected["cseq"]
    assert (message.top_via.branch, message.top_via.host) == (expected["branch"], expected["via_host"])
    assert message.from_.display_name == expected["display"]
    assert (message.from_.uri, message.from_.tag) == (expected["from_uri"], expected["tag"])
    assert message.body == expected["body"]
    assert parse_message(bytes(message)) == message
    points = sorted(min(c, len(data)) for c in cuts)
    framer = StreamFramer()
    items = [
        item
        for a, b in zip([0, *points], [*points, len(data)], strict=True)
        for item in framer.feed(data[a:b])
    ]
    assert items == [message]


header_lines = st.lists(
    st.one_of(
        st.sampled_from([line.decode("latin-1") for line in INJECTIONS]),
        st.builds(
            lambda name, value: f"{name}:{value}",
            st.sampled_from(["Via", "v", "To", "From", "f", "t", "Contact", "CSeq", "Call-ID", "l", "X"]),
            st.text(alphabet=st.sampled_from(list(' \t"<>,;:@%\\=?[]/*abcSIP2.0/UDPsip:1')), max_size=30),
        ),
    ),
    max_size=10,
)


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.sampled_from(["INVITE sip:a@example.com SIP/2.0", "SIP/2.0 200 OK", "BYE sip:b SIP/2.0", "x"]),
    header_lines,
    st.binary(max_size=20),
)
def test_free_form_header_sections_only_raise_sip_parse_error(
    start: str, lines: list[str], tail: bytes
) -> None:
    data = "\r\n".join([start, *lines]).encode("latin-1") + b"\r\n\r\n" + tail
    throw_at_parser(data)
    throw_at_framer(random.Random(len(data)), data)
