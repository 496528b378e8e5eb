"""SIP message parsing, framing, serialization and UAS checks against the RFC 4475 torture messages and
golden cases (RFC 3261 sections 7, 8.2, 18.3, 20; RFC 5626 section 3.5.1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from activecall.sip_edge.sip.syntax.headers import (
    COMPACT_FORMS,
    CONTACT_WILDCARD,
    AuthHeader,
    CSeq,
    Via,
    canonical_name,
    header_key,
    parse_call_id,
    parse_contact,
    parse_content_length,
    parse_max_forwards,
    parse_media_type,
    parse_name_addr_list,
    parse_token_list,
    parse_vias,
    split_header_values,
)
from activecall.sip_edge.sip.syntax.message import (
    Headers,
    KeepAlive,
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
from activecall.sip_edge.sip.syntax.uri import OpaqueUri, SipUri

VECTORS = Path(__file__).parent / "vectors" / "rfc4475"


def load(kind: str, name: str) -> bytes:
    return (VECTORS / kind / f"{name}.dat").read_bytes()


def parse_request(data: bytes) -> SipRequest:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


# -- RFC 4475 section 3.1.1: messages every parser must accept -----------------------------------------------


@dataclass(frozen=True)
class Valid:
    start: tuple[str, str] | tuple[int, str]  # (method, Request-URI) or (status, reason)
    call_id: str
    cseq: tuple[int, str]
    branch: str | None  # topmost Via
    vias: int
    body: int
    # validate_request (requests) or validate_response (responses) with default arguments.
    verdict: tuple[int, str] | str | None = None


WEIRD_METHOD = "!interesting-Method0123456789_*+`.%indeed'~"
VALID = {
    "wsinv": Valid(
        ("INVITE", "sip:vivekg@chair-dnrc.example.com;unknownparam"),
        "wsinv.ndaksdj@192.0.2.1",
        (9, "INVITE"),
        "390skdjuw",
        3,
        150,
    ),
    "intmeth": Valid(
        (
            WEIRD_METHOD,
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
            "(doesn't-it)@example.com",
        ),
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        (139122385, WEIRD_METHOD),
        "z9hG4bK-.!%66*_+`'~",
        1,
        0,
        (501, "Not Implemented"),
    ),
    "esc01": Valid(
        ("INVITE", "sip:sips%3Auser%40example.com@example.net"),
        "esc01.239409asdfakjkn23onasd0-3234",
        (234234, "INVITE"),
        "z9hG4bKkdjuw",
        1,
        150,
    ),
    "escnull": Valid(
        ("REGISTER", "sip:example.com"),
        "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
        (14398234, "REGISTER"),
        "z9hG4bKkdjuw",
        1,
        0,
    ),
    "esc02": Valid(
        ("RE%47IST%45R", "sip:registrar.example.com"),
        "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
        (29344, "RE%47IST%45R"),
        "z9hG4bK209%fzsnel234",
        1,
        0,
        (501, "Not Implemented"),
    ),
    "lwsdisp": Valid(
        ("OPTIONS", "sip:user@example.com"),
        "lwsdisp.1234abcd@funky.example.com",
        (60, "OPTIONS"),
        "z9hG4bKkdjuw",
        1,
        0,
    ),
    "longreq": Valid(
        ("INVITE", "sip:user@example.com"),
        "longreq.one" + "really" * 20 + "longcallid",
        (3882340, "INVITE"),
        None,
        34,
        150,
    ),
    "dblreq": Valid(
        ("REGISTER", "sip:example.com"),
        "dblreq.0ha0isndaksdj99sdfafnl3lk233412",
        (8, "REGISTER"),
        "z9hG4bKkdjuw23492",
        1,
        0,
    ),
    "semiuri": Valid(
        ("OPTIONS", "sip:user;par=u%40example.net@example.com"),
        "semiuri.0ha0isndaksdj",
        (8, "OPTIONS"),
        "z9hG4bKkdjuw",
        1,
        0,
    ),
    "transports": Valid(
        ("OPTIONS", "sip:user@example.com"),
        "transports.kijh4akdnaqjkwendsasfdj",
        (60, "OPTIONS"),
        "z9hG4bKkdjuw",
        5,
        0,
    ),
    "mpart01": Valid(
        ("MESSAGE", "sip:kumiko@example.org"),
        "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
        (1, "MESSAGE"),
        "z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-",
        1,
        553,
        (415, "Unsupported Media Type"),  # multipart/mixed is not among the default content types
    ),
    "unreason": Valid(
        (200, "= 2**3 * 5**2 но сто девяносто девять - простое"),
        "unreason.1234ksdfak3j2erwedfsASdf",
        (35, "INVITE"),
        "z9hG4bK1324923",
        1,
        154,
    ),
    "noreason": Valid(
        (100, ""),
        "noreason.asndj203insdf99223ndf",
        (35, "INVITE"),
        "z9hG4bK2398ndaoe",
        1,
        0,
    ),
}


def test_every_valid_vector_is_in_the_table() -> None:
    assert sorted(p.stem for p in (VECTORS / "valid").glob("*.dat")) == sorted(VALID)


def check_valid(message: SipRequest | SipResponse, expected: Valid) -> None:
    if isinstance(message, SipRequest):
        assert (message.method, str(message.uri)) == expected.start
        assert message.cseq.method == message.method
    else:
        assert (message.status, message.reason) == expected.start
    assert message.call_id == expected.call_id
    assert (message.cseq.number, message.cseq.method) == expected.cseq
    assert message.top_via.branch == expected.branch
    assert len(message.vias) == expected.vias
    assert len(message.body) == expected.body


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_vector_parses_and_round_trips(name: str) -> None:
    expected = VALID[name]
    message = parse_message(load("valid", name))
    check_valid(message, expected)
    data = bytes(message)
    again = parse_message(data)
    assert again == message
    check_valid(again, expected)
    assert bytes(again) == data
    if isinstance(message, SipRequest):
        assert validate_request(message) == expected.verdict
    else:
        assert validate_response(message) == expected.verdict


@pytest.mark.parametrize("name", sorted(set(VALID) - {"dblreq"}))
def test_valid_vector_frames_on_a_stream_byte_by_byte(name: str) -> None:
    data = load("valid", name)
    framer = StreamFramer()
    items = [item for byte in data for item in framer.feed(bytes([byte]))]
    assert items == [parse_message(data)]
    assert framer.buffered == 0
    assert not framer.broken


def test_dblreq_on_a_stream_is_two_requests_then_noise() -> None:
    # Over UDP the octets after the REGISTER are noise (RFC 4475 section 3.1.1.11); on a stream they are
    # the next message, and the 5 octets left after its 150-octet body cannot be framed.
    data = load("valid", "dblreq")
    framer = StreamFramer()
    items: list[object] = []
    with pytest.raises(SipParseError) as caught:
        for byte in data:
            items += framer.feed(bytes([byte]))
    assert caught.value.reason == "Missing Content-Length on stream"
    assert framer.broken
    assert len(items) == 2
    register, invite = items
    assert register == parse_message(data)
    assert isinstance(invite, SipRequest)
    assert (invite.method, invite.call_id, len(invite.body)) == (
        "INVITE",
        "dblreq.0ha0isnda977644900765@192.0.2.15",
        150,
    )


def test_wsinv_unfolding_and_whitespace() -> None:
    message = parse_request(load("valid", "wsinv"))
    headers = message.headers
    assert headers.get("CSeq") == "0009 INVITE"
    assert headers.get("To") == "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n"
    assert headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert headers.get("Subject") == ""
    assert headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert message.max_forwards == 68
    assert message.to.tag == "1918181833n"
    assert message.from_.display_name == 'J Rosenberg \\"'
    assert message.from_.tag == "98asjd8"
    assert [(v.transport, v.host, v.branch) for v in message.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert [str(r.uri) for r in message.routes] == [
        "sip:services.example.com;lr;unknownwith=value;unknown-no-value"
    ]
    [contact] = message.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert message.content_type == "application/sdp"


def test_printing_uses_canonical_names_and_one_line_per_field() -> None:
    data = bytes(parse_message(load("valid", "wsinv")))
    head = data.split(b"\r\n\r\n")[0].decode()
    assert head.splitlines()[:8] == [
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0",
        "To: sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
        'From: "J Rosenberg \\\\\\""       <sip:jdrosen@example.com> ; tag = 98asjd8',
        "Max-Forwards: 0068",
        "Call-ID: wsinv.ndaksdj@192.0.2.1",
        "Content-Length: 150",
        "CSeq: 0009 INVITE",
        "Via: SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw",
    ]


def test_longreq_compact_and_odd_case_via_names() -> None:
    message = parse_request(load("valid", "longreq"))
    assert [v.host for v in message.vias] == [f"sip{n}.example.com" for n in range(33, 0, -1)] + [
        "host.example.com"
    ]
    last = message.vias[-1]
    assert last.received == "192.0.2.5"
    assert last.branch == "very" + "long" * 50 + "branchvalue"
    assert message.to.display_name == "I have a user name of " + "extreme" * 10 + " proportion"
    assert message.to.uri == SipUri(
        "sip",
        "user",
        None,
        "example.com",
        6000,
        {
            "unknownparam1": "very" + "long" * 20 + "value",
            "longparam" + "name" * 25: "shortvalue",
            "very" + "long" * 25 + "ParameterNameWithNoValue": None,
        },
        {},
    )


def test_escapes_are_kept_in_uris() -> None:
    message = parse_request(load("valid", "esc01"))
    assert isinstance(message.uri, SipUri)
    assert message.uri.user == "sips%3Auser%40example.com"
    assert str(message.to.uri) == "sip:%75se%72@example.com"
    assert message.from_.uri == SipUri("sip", "I%20have%20spaces", None, "example.net", None, {}, {})
    [contact] = message.contacts
    assert contact.uri == SipUri(
        "sip", "cal%6Cer", None, "host5.example.net", None, {"%6C%72": None, "n%61me": "v%61lue%25%34%31"}, {}
    )


def test_escaped_header_name_is_an_extension_header() -> None:
    message = parse_request(load("valid", "esc02"))
    assert [str(c.uri) for c in message.contacts] == [
        "sip:alias1@host1.example.com",
        "sip:alias3@host3.example.com",
    ]
    assert message.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert message.to.display_name == "%Z%45"


def test_escaped_nulls_and_user_with_semicolon() -> None:
    message = parse_request(load("valid", "escnull"))
    assert [c.uri for c in message.contacts] == [
        SipUri("sip", "%00", None, "host5.example.com", None, {}, {}),
        SipUri("sip", "%00%00", None, "host5.example.com", None, {}, {}),
    ]
    semi = parse_request(load("valid", "semiuri"))
    assert isinstance(semi.uri, SipUri)
    assert (semi.uri.user, semi.uri.host, semi.uri.params) == ("user;par=u%40example.net", "example.com", {})
    assert semi.headers.get_list("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_intmeth_keeps_utf8_and_odd_names() -> None:
    message = parse_request(load("valid", "intmeth"))
    assert message.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert message.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert message.from_.params == {"fromParam''~+*_!.-%": '"работающий"', "tag": "_token~1'+`*%!-."}
    assert message.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"


def test_transports_and_rport() -> None:
    message = parse_request(load("valid", "transports"))
    assert [v.transport for v in message.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    mpart = parse_request(load("valid", "mpart01"))
    via = mpart.top_via
    assert (via.host, via.port, via.rport_requested, via.rport) == ("127.0.0.1", 5070, True, None)
    assert mpart.body.startswith(b"--7a9cbec02ceef655\r\n")
    assert mpart.body.endswith(b"--7a9cbec02ceef655--\r\n")


def test_dblreq_datagram_ignores_octets_after_content_length() -> None:
    # RFC 4475 section 3.1.1.11: the INVITE after the REGISTER is noise in a datagram.
    message = parse_request(load("valid", "dblreq"))
    assert message.body == b""
    assert bytes(message).endswith(b"Content-Length: 0\r\n\r\n")


# -- RFC 4475 sections 3.1.2, 3.2, 3.3, 3.4: what each invalid or unusual message earns ----------------------


@dataclass(frozen=True)
class Invalid:
    section: str
    parse_error: str | None = None  # SipParseError reason from parse_message
    answerable: bool = False  # the error carries a partial request to answer with a 400
    status: tuple[int, str] | None = None  # validate_request result
    drop: str | None = None  # validate_response result


INVALID = {
    # 3.1.2: syntax
    "badinv01": Invalid("3.1.2.1", status=(400, "Bad parameter in Via")),
    "clerr": Invalid("3.1.2.2", "Content-Length beyond end of message", answerable=True),
    "ncl": Invalid("3.1.2.3", "Bad Content-Length", answerable=True),
    "scalar02": Invalid("3.1.2.4", status=(400, "CSeq out of range")),
    "scalarlg": Invalid("3.1.2.5", drop="CSeq out of range"),
    "quotbal": Invalid("3.1.2.6", status=(400, "Unterminated quoted string in To")),
    "ltgtruri": Invalid("3.1.2.7", "Bad Request-URI", answerable=True),
    "lwsruri": Invalid("3.1.2.8", "Bad request line", answerable=True),
    "lwsstart": Invalid("3.1.2.9", "Bad request line", answerable=True),
    "trws": Invalid("3.1.2.10", "Bad request line", answerable=True),
    "escruri": Invalid("3.1.2.11", status=(400, "Headers in Request-URI")),
    "baddate": Invalid("3.1.2.12", status=(400, "Bad Date")),
    "regbadct": Invalid("3.1.2.13", status=(400, "Unbracketed URI with ? or , in Contact")),
    "badaspec": Invalid("3.1.2.14", status=(400, "Bad URI in To")),
    # The vector also lacks the empty line ending the header section.
    "baddn": Invalid("3.1.2.15", "No empty line after headers", answerable=True),
    "badvers": Invalid("3.1.2.16", status=(505, "Version Not Supported")),
    "mismatch01": Invalid("3.1.2.17", status=(400, "CSeq method mismatch")),
    "mismatch02": Invalid("3.1.2.18", status=(501, "Not Implemented")),
    "bigcode": Invalid("3.1.2.19", "Bad status code"),
    # 3.2: transaction layer
    "badbranch": Invalid("3.2.1", status=(400, "Empty Via branch")),
    # 3.3: application layer
    "insuf": Invalid("3.3.1", status=(400, "Missing To")),
    "unkscm": Invalid("3.3.2", status=(416, "Unsupported URI Scheme")),
    "novelsc": Invalid("3.3.3", status=(416, "Unsupported URI Scheme")),
    "unksm2": Invalid("3.3.4", status=(400, "To is not a SIP URI")),
    "bext01": Invalid("3.3.5", status=(420, "Bad Extension")),
    "invut": Invalid("3.3.6", status=(415, "Unsupported Media Type")),
    # 3.3.7: well formed; a registrar that authenticates answers 401, which is the auth layer's call.
    "regaut01": Invalid("3.3.7"),
    "multi01": Invalid("3.3.8", status=(400, "Multiple To")),
    "mcl01": Invalid("3.3.9", "Conflicting Content-Length", answerable=True),
    "bcast": Invalid("3.3.10", drop="2 Via values in a response"),
    "zeromf": Invalid("3.3.11", status=(483, "Too Many Hops")),
    # 3.3.12 to 3.3.14: "This REGISTER request should succeed."
    "cparam01": Invalid("3.3.12"),
    "cparam02": Invalid("3.3.13"),
    "regescrt": Invalid("3.3.14"),
    "sdp01": Invalid("3.3.15", status=(406, "Not Acceptable")),
    # 3.4.1: legal RFC 2543 syntax that RFC 3261 elements should accept.
    "inv2543": Invalid("3.4.1"),
}


def test_every_invalid_vector_is_in_the_table() -> None:
    assert sorted(p.stem for p in (VECTORS / "invalid").glob("*.dat")) == sorted(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_vector_outcome(name: str) -> None:
    expected = INVALID[name]
    data = load("invalid", name)
    if expected.parse_error is not None:
        with pytest.raises(MalformedMessage) as caught:
            parse_message(data)
        assert caught.value.reason == expected.parse_error
        partial = caught.value.partial
        if not expected.answerable:
            assert partial is None
            return
        assert isinstance(partial, SipRequest)
        response = make_response(partial, 400, caught.value.reason)
        assert response.headers.get_all("Via") == partial.headers.get_all("Via")
        assert response.call_id == partial.call_id
        assert response.cseq == partial.cseq
        assert bytes(parse_message(bytes(response))) == bytes(response)
        return
    message = parse_message(data)
    assert parse_message(bytes(message)).headers.get_all("Call-ID") == message.headers.get_all("Call-ID")
    if isinstance(message, SipResponse):
        assert validate_response(message) == expected.drop
    else:
        assert expected.drop is None
        assert validate_request(message) == expected.status


def test_zero_max_forwards_is_fine_at_an_endpoint() -> None:
    message = parse_request(load("invalid", "zeromf"))
    assert message.max_forwards == 0
    assert validate_request(message, endpoint=True) is None


def test_unknown_method_with_cseq_mismatch_when_the_method_is_implemented() -> None:
    message = parse_request(load("invalid", "mismatch02"))
    assert validate_request(message, methods={"NEWMETHOD"}, endpoint=True) == (400, "CSeq method mismatch")


def test_options_for_extensions_and_media() -> None:
    bext = parse_request(load("invalid", "bext01"))
    assert validate_request(bext, extensions={"nothingSupportsThis", "nothingSupportsThisEither"}) is None
    invut = parse_request(load("invalid", "invut"))
    assert validate_request(invut, content_types={"application/unknownformat"}) is None
    novelsc = parse_request(load("invalid", "novelsc"))
    assert isinstance(novelsc.uri, OpaqueUri)
    assert validate_request(novelsc, uri_schemes={"soap.beep"}) is None


def test_contact_params_versus_uri_params() -> None:
    # RFC 4475 sections 3.3.12 and 3.3.13.
    [contact] = parse_request(load("invalid", "cparam01")).contacts
    assert isinstance(contact.uri, SipUri)
    assert (contact.uri.params, contact.params) == ({}, {"unknownparam": None})
    [contact] = parse_request(load("invalid", "cparam02")).contacts
    assert isinstance(contact.uri, SipUri)
    assert (contact.uri.params, contact.params) == ({"unknownparam": None}, {})


def test_registered_contact_keeps_escaped_header() -> None:
    # RFC 4475 section 3.3.14.
    [contact] = parse_request(load("invalid", "regescrt")).contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.headers == {"Route": "%3Csip:sip.example.com%3E"}
    assert str(contact) == "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"


def test_unknown_schemes_in_header_fields_parse() -> None:
    message = parse_request(load("invalid", "unksm2"))
    assert (message.to.uri, message.from_.uri) == (
        OpaqueUri("isbn:2983792873"),
        OpaqueUri("http://www.example.com"),
    )
    assert [c.uri for c in message.contacts] == [OpaqueUri("name:John_Smith")]


def test_unknown_authorization_scheme_parses() -> None:
    message = parse_request(load("invalid", "regaut01"))
    auth = AuthHeader.parse(message.headers.get("Authorization") or "")
    assert (auth.scheme, auth.params) == ("NoOneKnowsThisScheme", {"opaque-data": "here"})


def test_broadcast_via_and_rfc2543_request() -> None:
    bcast = parse_message(load("invalid", "bcast"))
    assert [v.host for v in bcast.vias] == ["192.0.2.198", "255.255.255.255"]
    old = parse_request(load("invalid", "inv2543"))
    # No Content-Length in a datagram: the body is everything after the empty line.
    assert (len(old.body), old.top_via.branch, old.from_.tag, old.max_forwards) == (105, None, None, None)
    assert bytes(old).count(b"Content-Length: 105\r\n") == 1


# -- header fields -------------------------------------------------------------------------------------------


def test_compact_forms() -> None:
    lines = [f"{letter}: {'0' if letter == 'l' else 'value-' + letter}" for letter in sorted(COMPACT_FORMS)]
    message = parse_request(
        ("OPTIONS sip:a@example.com SIP/2.0\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode()
    )
    assert [name for name, _ in message.headers] == [COMPACT_FORMS[k] for k in sorted(COMPACT_FORMS)]
    assert message.headers.get("Refer-To") == "value-r"
    assert message.headers.get("R") == "value-r"
    assert message.headers.get("session-expires") == "value-x"
    assert message.headers.get("Referred-By") == "value-b"
    assert message.headers.get("Content-Length") == "0"
    assert canonical_name("v") == canonical_name("VIA") == "Via"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("X-Custom") == "X-Custom"
    assert header_key("I") == header_key("call-id") == "call-id"


def test_headers_store() -> None:
    headers = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("v", "SIP/2.0/UDP b;branch=z9hG4bK2")])
    headers.add("X-Note", "one")
    headers.add("x-note", "two, three")
    assert headers.get("VIA") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert headers.get_all("via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2"]
    assert headers.get_list("X-Note") == ["one", "two", "three"]
    assert headers.count("Via") == 2
    assert "x-NOTE" in headers
    assert "Route" not in headers
    assert headers.get("Route", "none") == "none"
    headers.set("x-note", "only")
    assert list(headers) == [
        ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"),
        ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2"),
        ("x-note", "only"),
    ]
    headers.set("Call-ID", "abc@host")
    assert list(headers)[-1] == ("Call-ID", "abc@host")
    assert headers.remove("v") == 2
    assert len(headers) == 2
    copy = headers.copy()
    copy.add("Subject", "x")
    assert len(headers) == 2
    assert headers == Headers([("X-NOTE", "only"), ("i", "abc@host")])
    with pytest.raises(ValueError):
        headers.add("Bad Name", "x")
    with pytest.raises(ValueError):
        headers.add("Subject", "injected\r\nVia: x")


def test_folded_lines_are_unfolded() -> None:
    message = parse_request(
        b"OPTIONS sip:a@example.com SIP/2.0\r\n"
        b"Subject: first\r\n"
        b"\t second\r\n"
        b"   third\r\n"
        b"Via: SIP/2.0/UDP\r\n host.example.com;branch=z9hG4bKx\r\n"
        b"\r\n"
    )
    assert message.headers.get("Subject") == "first second third"
    assert message.top_via.host == "host.example.com"


def test_split_header_values_respects_quotes_and_brackets() -> None:
    value = '"Smith, John" <sip:j@example.com;p=1,2>;q=0.5, <sip:k@example.com>,sip:l@example.com'
    assert split_header_values(value) == [
        '"Smith, John" <sip:j@example.com;p=1,2>;q=0.5',
        "<sip:k@example.com>",
        "sip:l@example.com",
    ]
    assert split_header_values('"a\\",b", c') == ['"a\\",b"', "c"]
    assert split_header_values("a,,b") == ["a", "", "b"]
    for bad in ('"open, x', "<sip:a@b, c"):
        with pytest.raises(SipParseError):
            split_header_values(bad)


def test_via_rport_received_and_printing() -> None:
    via = Via.parse("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport")
    assert (via.protocol, via.version, via.transport) == ("SIP", "2.0", "UDP")
    assert (via.host, via.port, via.sent_by, via.branch) == (
        "192.0.2.1",
        5060,
        "192.0.2.1:5060",
        "z9hG4bK776asdhds",
    )
    assert (via.rport_requested, via.rport, via.received) == (True, None, None)
    stamped = via.with_received("198.51.100.4", 61234)
    assert (
        str(stamped) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport=61234;received=198.51.100.4"
    )
    assert (stamped.rport, stamped.received) == (61234, "198.51.100.4")
    assert via.params == {"branch": "z9hG4bK776asdhds", "rport": None}
    plain = Via.parse("SIP/2.0/TCP client.example.com;branch=z9hG4bK1").with_received("192.0.2.9", 5090)
    assert str(plain) == "SIP/2.0/TCP client.example.com;branch=z9hG4bK1;received=192.0.2.9"
    v6 = Via.parse(
        "SIP/2.0/TLS [2001:db8::9] : 5061 ;branch=z9hG4bK2;received=2001:db8::1;ttl=16;maddr=224.2.0.1"
    )
    assert (v6.host, v6.port, v6.received, v6.maddr) == ("[2001:db8::9]", 5061, "2001:db8::1", "224.2.0.1")
    assert str(Via(transport="TCP", host="h.example.com", params={"branch": "z9hG4bKa"})) == (
        "SIP/2.0/TCP h.example.com;branch=z9hG4bKa"
    )
    assert [
        v.branch for v in parse_vias("SIP/2.0/UDP a;branch=z9hG4bK1 , SIP/2.0/UDP b;branch=z9hG4bK2")
    ] == [
        "z9hG4bK1",
        "z9hG4bK2",
    ]


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP",
        "SIP/2.0 host.example.com",
        "SIP/2.0/UDP host.example.com:99999",
        "SIP/2.0/UDP host.example.com;branch",
        "SIP/2.0/UDP host.example.com;received=host.example.com",
        "SIP/2.0/UDP host.example.com;rport=x",
        "SIP/2.0/UDP host.example.com;ttl=256",
        "SIP/2.0/UDP host.example.com;maddr=a_b",
        "SIP/2.0/UDP 192.0.2.15;;",  # RFC 4475 badinv01
        "SIP/2.0/UDP host .example.com",
        "SIP/2.0/U(P host.example.com",
    ],
)
def test_bad_via_values(value: str) -> None:
    with pytest.raises(SipParseError):
        Via.parse(value)


def test_scalar_fields() -> None:
    assert CSeq.parse("0009 \t INVITE") == CSeq(9, "INVITE")
    assert str(CSeq(2147483647, "BYE")) == "2147483647 BYE"
    for bad in ("2147483648 INVITE", "1", "-1 INVITE", "1 INV ITE", "x INVITE", "1 INVITE extra"):
        with pytest.raises(SipParseError):
            CSeq.parse(bad)
    assert parse_content_length(" 00012 ") == 12
    assert parse_max_forwards("0068") == 68
    for bad in ("-999", "five", "", "1 2"):
        with pytest.raises(SipParseError):
            parse_content_length(bad)
    with pytest.raises(SipParseError):
        parse_max_forwards("256")
    assert parse_call_id("a84b4c76e66710@pc33.atlanta.com") == "a84b4c76e66710@pc33.atlanta.com"
    for bad in ("a b", "a@b@c", "", "a,b"):
        with pytest.raises(SipParseError):
            parse_call_id(bad)


def test_contact_route_and_option_tag_lists() -> None:
    assert parse_contact(" * ") == CONTACT_WILDCARD
    contacts = parse_contact('"A, B" <sip:a@example.com>;expires=60, sip:b@example.com;q=0.1')
    assert isinstance(contacts, list)
    assert [(c.display_name, str(c.uri), c.params) for c in contacts] == [
        ("A, B", "sip:a@example.com", {"expires": "60"}),
        (None, "sip:b@example.com", {"q": "0.1"}),
    ]
    routes = parse_name_addr_list("<sip:p1.example.com;lr>, <sip:p2.example.com;lr>")
    assert [str(r.uri) for r in routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    with pytest.raises(SipParseError):
        parse_name_addr_list("sip:p1.example.com")
    assert parse_token_list("100rel, timer ,replaces") == ["100rel", "timer", "replaces"]
    with pytest.raises(SipParseError):
        parse_token_list("100rel, ti mer")
    assert parse_media_type("Application/SDP ; charset=utf-8") == "application/sdp"
    with pytest.raises(SipParseError):
        parse_media_type("application")


def test_wildcard_contact_on_a_message() -> None:
    message = parse_request(
        b"REGISTER sip:example.com SIP/2.0\r\nContact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n"
    )
    assert message.contact_wildcard
    assert message.contacts == []


def test_auth_param_lists() -> None:
    challenge = AuthHeader.parse(
        'Digest realm="atlanta.com", domain="sip:boxesbybob.com", qop="auth,auth-int",\r\n'.rstrip()
        + ' nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5'
    )
    assert challenge.scheme == "Digest"
    assert challenge.params == {
        "realm": "atlanta.com",
        "domain": "sip:boxesbybob.com",
        "qop": "auth,auth-int",
        "nonce": "f84f1cec41e6cbe5aea9c8e88d359",
        "opaque": "",
        "stale": "FALSE",
        "algorithm": "MD5",
    }
    assert challenge.get("REALM") == "atlanta.com"
    assert str(challenge) == (
        'Digest realm="atlanta.com", domain="sip:boxesbybob.com", qop="auth,auth-int", '
        'nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5'
    )
    assert AuthHeader.parse(str(challenge)) == challenge
    credentials = AuthHeader("Digest", {"username": 'bob "b"', "nc": "00000001", "qop": "auth"})
    assert str(credentials) == 'Digest username="bob \\"b\\"", nc=00000001, qop=auth'
    for bad in (
        "Digest",
        'Digest realm="a", realm="b"',
        "Digest realm",
        'Digest realm="open',
        "Digest a=b,,c=d",
    ):
        with pytest.raises(SipParseError):
            AuthHeader.parse(bad)


# -- start line and framing errors ---------------------------------------------------------------------------

BASIC = (
    b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 OPTIONS\r\n"
)


def options(
    extra: bytes = b"", body: bytes = b"", start: bytes = b"OPTIONS sip:bob@example.com SIP/2.0"
) -> bytes:
    return start + b"\r\n" + BASIC + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


@pytest.mark.parametrize(
    ("data", "reason", "answerable"),
    [
        (b"", "Empty message", False),
        (b"\r\n\r\n", "Empty message", False),
        (b"x" * 65536, "Message too large", False),
        (options(start=b"OPTIONS sip:bob@example.com SIP/2.0 "), "Bad request line", True),
        (options(start=b"OPTIONS sip:bob@example.com HTTP/1.1"), "Bad SIP version", True),
        (options(start=b"OPT IONS sip:bob@example.com SIP/2.0"), "Bad request line", True),
        (options(start=b"OPTIONS sip:bob@exa\nmple.com SIP/2.0"), "Bad start line", True),
        (options(start=b"SIP/2.0 2000 OK"), "Bad status code", False),
        (options(start=b"SIP/2.0 099 Low"), "Bad status code", False),
        (options(start=b"SIP/2.0 20x OK"), "Bad status code", False),
        (options(b"NoColonHere\r\n"), "Bad header line", True),
        (options(b"Bad Name: x\r\n"), "Bad header line", True),
        (options(b"X-A: one\ntwo\r\n"), "Bare CR or LF", True),
        (
            b"OPTIONS sip:a@b.com SIP/2.0\r\n folded first\r\nContent-Length: 0\r\n\r\n",
            "Folded line before first header",
            False,
        ),
        (options(b"Content-Length: 5\r\n"), "Conflicting Content-Length", True),
    ],
)
def test_malformed_messages(data: bytes, reason: str, answerable: bool) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    assert caught.value.reason == reason
    assert (caught.value.partial is not None) is answerable
    assert isinstance(caught.value, ValueError)


def test_leading_crlf_and_repeated_equal_content_length_are_accepted() -> None:
    message = parse_request(b"\r\n\r\n" + options(b"Content-Length: 4\r\n", b"abcd"))
    assert message.body == b"abcd"
    assert message.call_id == "a84b4c76e66710@pc33.example.com"
    assert validate_request(message) == (400, "Body without Content-Type")


def test_serialization_sets_content_length() -> None:
    request = SipRequest("OPTIONS", SipUri.parse("sip:bob@example.com"))
    request.headers.add("Content-Length", "99")
    request.headers.add("Content-Length", "98")
    request.headers.add("Subject", "hi")
    request.body = b"hello"
    assert (
        bytes(request)
        == b"OPTIONS sip:bob@example.com SIP/2.0\r\nContent-Length: 5\r\nSubject: hi\r\n\r\nhello"
    )
    response = SipResponse(180, "Ringing")
    assert bytes(response) == b"SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n"
    assert SipResponse.parse(bytes(response)) == SipResponse(
        180, "Ringing", Headers([("Content-Length", "0")])
    )
    with pytest.raises(SipParseError):
        SipRequest.parse(bytes(response))
    with pytest.raises(SipParseError):
        SipResponse.parse(bytes(request))


# -- UAS checks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (b"", None),
        (b"Require: 100rel\r\n", (420, "Bad Extension")),
        (b"Proxy-Require: foo\r\n", None),  # only proxies act on Proxy-Require (RFC 3261 section 8.2.2.3)
        (b"Via: SIP/2.0/UDP 192.0.2.3;branch=z9hG4bKz;received=bogus\r\n", (400, "Bad Via received")),
        (b"Max-Forwards: 10\r\n", (400, "Multiple Max-Forwards")),
        (b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n", None),
        (b"Date: Sat, 13 Nov 2010 23:29:00 UTC\r\n", (400, "Bad Date")),
        (b"Route: sip:p1.example.com\r\n", (400, "Route URI must be in <>")),
        (b"Record-Route: <sip:p1.example.com;lr\r\n", (400, "Missing > in Record-Route")),
        (b"Contact: <sip:a@b.com>, *\r\n", (400, "Bad URI in Contact")),
        (b"Content-Type: text\r\n", (400, "Bad media type in Content-Type")),
        (b"Accept: text/plain\r\n", None),  # Accept matters for INVITE answers only
    ],
)
def test_validate_request_cases(extra: bytes, expected: tuple[int, str] | None) -> None:
    assert validate_request(parse_request(options(extra))) == expected


def test_validate_invite_accept_and_extensions() -> None:
    start = b"INVITE sip:bob@example.com SIP/2.0"
    sdp = b"v=0\r\n"

    def invite(extra: bytes) -> SipRequest:
        data = options(b"Content-Type: application/sdp\r\n" + extra, sdp, start).replace(
            b"OPTIONS", b"INVITE"
        )
        return parse_request(data)

    assert validate_request(invite(b"")) is None
    assert validate_request(invite(b"Accept: application/*\r\n")) is None
    assert validate_request(invite(b"Accept: */*\r\n")) is None
    assert validate_request(invite(b"Accept: text/plain\r\n")) == (406, "Not Acceptable")
    assert validate_request(invite(b"Require: timer\r\n"), extensions={"timer"}) is None
    ack = parse_request(options(b"Require: timer\r\n").replace(b"OPTIONS", b"ACK"))
    assert validate_request(ack) is None  # no 420 for ACK (RFC 3261 section 8.2.2.3)


def test_validate_response_cases() -> None:
    ok = parse_message(options(start=b"SIP/2.0 200 OK"))
    assert isinstance(ok, SipResponse)
    assert validate_response(ok) is None
    missing = parse_message(options(start=b"SIP/2.0 200 OK").replace(b"Call-ID", b"X-Call-ID"))
    assert isinstance(missing, SipResponse)
    assert validate_response(missing) == "Missing Call-ID"
    old = parse_message(options(start=b"SIP/3.0 200 OK"))
    assert isinstance(old, SipResponse)
    assert validate_response(old) == "Unsupported SIP version"


# -- make_response -------------------------------------------------------------------------------------------


def test_make_response_copies_the_transaction_fields() -> None:
    request = parse_request(
        options(
            b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1\r\n"
            b"Contact: <sip:alice@pc33.example.com>\r\n"
            b"Timestamp: 54\r\n",
            b"",
        )
    )
    response = make_response(request, 200, to_tag="a6c85cf")
    assert bytes(response) == (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n"
        b"To: Bob <sip:bob@example.com>;tag=a6c85cf\r\n"
        b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
        b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
        b"CSeq: 314159 OPTIONS\r\n"
        b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    trying = make_response(request, 100)
    assert trying.reason == "Trying"
    assert trying.headers.get("Timestamp") == "54"
    assert trying.to.tag is None
    assert [v.branch for v in trying.vias] == ["z9hG4bK776asdhds", "z9hG4bKp1"]
    tagged = parse_request(
        bytes(request).replace(b"To: Bob <sip:bob@example.com>", b"To: sip:bob@example.com;tag=x")
    )
    again = make_response(tagged, 486, "Busy", "y")
    assert (again.reason, again.to.tag, again.headers.get("To")) == ("Busy", "x", "sip:bob@example.com;tag=x")
    untagged = parse_request(
        bytes(request).replace(b"To: Bob <sip:bob@example.com>", b"To: sip:bob@example.com")
    )
    assert make_response(untagged, 180, to_tag="z1").headers.get("To") == "sip:bob@example.com;tag=z1"
    with pytest.raises(ValueError):
        make_response(request, 99)
    with pytest.raises(ValueError):
        make_response(request, 200, to_tag="bad tag")


# -- parsed values kept on the headers -----------------------------------------------------------------------


def test_parsed_fields_are_kept_until_a_field_changes() -> None:
    request = parse_request(options(b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1\r\n"))
    assert request.from_ is request.from_
    assert request.cseq is request.cseq
    assert request.top_via is request.top_via
    to, from_ = request.to, request.from_
    request.headers.add("X-Other", "1")  # other fields: the parsed values stay
    assert request.to is to
    request.headers.set("To", "<sip:carol@example.com>")
    assert str(request.to.uri) == "sip:carol@example.com"
    assert request.from_ is from_
    request.headers.add("f", "<sip:dave@example.com>;tag=2")  # compact form, now two From fields
    with pytest.raises(SipParseError, match="Multiple From"):
        request.from_  # noqa: B018
    request.headers.set("CSeq", "7 OPTIONS")
    assert request.cseq == CSeq(7, "OPTIONS")
    request.headers.remove("Max-Forwards")
    assert request.max_forwards is None
    request.headers.replace_first("Via", "SIP/2.0/UDP other.example.com;branch=z9hG4bKo1")
    assert [v.host for v in request.vias] == ["other.example.com", "proxy.example.com"]
    request.headers = Headers([("Call-ID", "fresh@x")])  # a new store parses anew
    assert request.call_id == "fresh@x"


def test_parsed_values_cannot_be_changed_and_lists_are_copies() -> None:
    request = parse_request(options(b"Contact: <sip:alice@pc33.example.com>\r\n"))
    with pytest.raises(AttributeError):
        request.to.display_name = "Mallory"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        request.top_via.host = "elsewhere.example.com"  # type: ignore[misc]
    request.vias.clear()
    request.contacts.clear()
    assert len(request.vias) == 1 and len(request.contacts) == 1


def test_a_field_that_does_not_parse_fails_on_every_access() -> None:
    request = parse_request(options().replace(b"CSeq: 314159 OPTIONS", b"CSeq: x OPTIONS"))
    for _ in range(2):
        with pytest.raises(SipParseError, match="Bad CSeq"):
            request.cseq  # noqa: B018


def test_vias_reuse_the_parsed_top_via() -> None:
    request = parse_request(
        options(
            b"Via: SIP/2.0/TCP p2.example.com;branch=z9hG4bKp2, "
            b"SIP/2.0/UDP p3.example.com;branch=z9hG4bKp3\r\n"
        )
    )
    top = request.top_via
    assert request.vias[0] is top
    assert request.vias == [
        Via.parse(item) for v in request.headers.get_all("Via") for item in split_header_values(v)
    ]
    bad = parse_request(options(b"Via: SIP/2.0/TCP p2.example.com;branch=z9hG4bKp2, junk\r\n"))
    assert bad.top_via.host == "pc33.example.com"
    with pytest.raises(SipParseError):
        bad.vias  # noqa: B018


def test_a_response_takes_over_what_its_request_parsed() -> None:
    request = parse_request(options())
    request.vias, request.from_, request.to, request.cseq, request.call_id  # noqa: B018
    for to_tag in (None, "a6c85cf"):
        response = make_response(request, 200, to_tag=to_tag)
        assert response.from_ is request.from_ and response.cseq is request.cseq
        fresh = SipResponse.parse(bytes(response))
        assert (response.to, response.vias, response.from_) == (fresh.to, fresh.vias, fresh.from_)
        assert (response.cseq, response.call_id) == (fresh.cseq, fresh.call_id)
    tagged = parse_request(
        options().replace(b"To: Bob <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=x")
    )
    to = tagged.to
    assert make_response(tagged, 200, to_tag="y").to is to


def test_replacing_the_top_via_keeps_the_others_and_the_parse() -> None:
    request = parse_request(options(b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1\r\n"))
    stamped = request.top_via.with_received("192.0.2.4", 5066)
    request.replace_top_via(stamped)
    assert request.top_via is stamped
    assert request.headers.get_all("Via") == [str(stamped), "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1"]
    assert request.vias == [
        Via.parse(str(stamped)),
        Via.parse("SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp1"),
    ]
    request.replace_top_via(stamped.with_received("not-an-ip"))  # kept as text; refused when read
    with pytest.raises(SipParseError, match="Bad Via received"):
        request.top_via  # noqa: B018


# -- StreamFramer --------------------------------------------------------------------------------------------


def test_framer_reports_pings_and_skips_stray_crlf() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [KeepAlive.PING]
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [KeepAlive.PING]
    message = options()
    assert framer.feed(b"\r\n" + message[:10]) == []
    items = framer.feed(message[10:] + b"\r\n\r\n" + message)
    assert items == [parse_message(message), KeepAlive.PING, parse_message(message)]
    assert not framer.broken


def test_framer_returns_malformed_framed_messages_as_errors() -> None:
    framer = StreamFramer()
    bad = options(start=b"OPTIONS <sip:bob@example.com> SIP/2.0")
    good = options(b"", b"hi")
    items = framer.feed(bad + good)
    assert len(items) == 2
    error, message = items
    assert isinstance(error, SipParseError)
    assert error.reason == "Bad Request-URI"
    assert isinstance(error.partial, SipRequest)
    assert error.partial.uri == OpaqueUri("<sip:bob@example.com>")
    assert isinstance(message, SipRequest)
    assert message.body == b"hi"
    assert not framer.broken


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (options().replace(b"Content-Length: 0\r\n", b""), "Missing Content-Length on stream"),
        (options().replace(b"Content-Length: 0", b"Content-Length: -1"), "Bad Content-Length"),
        (options().replace(b"Content-Length: 0", b"Content-Length: 99999"), "Message too large"),
        (options(b"Content-Length: 1\r\n"), "Conflicting Content-Length"),
        (b"garbage without end " * 4000, "Header section too large"),
        (b"INVALID\r\n\r\n", "Missing Content-Length on stream"),
    ],
)
def test_framer_fails_on_unframeable_input(data: bytes, reason: str) -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError) as caught:
        framer.feed(data)
    assert caught.value.reason == reason
    assert framer.broken
    with pytest.raises(SipParseError):
        framer.feed(options())


def test_framer_returns_complete_messages_before_a_framing_failure() -> None:
    framer = StreamFramer(max_size=2000)
    items = framer.feed(options() + b"x" * 2001)
    assert items == [parse_message(options())]
    assert framer.broken
    with pytest.raises(SipParseError) as caught:
        framer.feed(b"")
    assert caught.value.reason == "Header section too large"
