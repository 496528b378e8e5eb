"""SIP/SIPS/tel URIs and name-addr (RFC 3261 sections 19.1, 20.10, 25.1; RFC 3966)."""

from __future__ import annotations

import pytest

from activecall.sip_edge.sip.syntax.uri import (
    NameAddr,
    OpaqueUri,
    SipParseError,
    SipUri,
    get_param,
    is_host,
    parse_uri,
    quote_string,
    unescape,
)

# text -> (scheme, user, password, host, port, params, headers)
VALID_SIP_URIS = {
    "sip:alice@atlanta.com": ("sip", "alice", None, "atlanta.com", None, {}, {}),
    "sip:alice:secretword@atlanta.com;transport=tcp": (
        "sip",
        "alice",
        "secretword",
        "atlanta.com",
        None,
        {"transport": "tcp"},
        {},
    ),
    "sips:alice@atlanta.com?subject=project%20x&priority=urgent": (
        "sips",
        "alice",
        None,
        "atlanta.com",
        None,
        {},
        {"subject": "project%20x", "priority": "urgent"},
    ),
    "sip:+1-212-555-1212:1234@gateway.com;user=phone": (
        "sip",
        "+1-212-555-1212",
        "1234",
        "gateway.com",
        None,
        {"user": "phone"},
        {},
    ),
    "sip:alice@192.0.2.4:5061": ("sip", "alice", None, "192.0.2.4", 5061, {}, {}),
    "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com": (
        "sip",
        None,
        None,
        "atlanta.com",
        None,
        {"method": "REGISTER"},
        {"to": "alice%40atlanta.com"},
    ),
    "sip:alice;day=tuesday@atlanta.com": ("sip", "alice;day=tuesday", None, "atlanta.com", None, {}, {}),
    "sip:[2001:db8::10]:5070;lr;maddr=[2001:db8::1]": (
        "sip",
        None,
        None,
        "[2001:db8::10]",
        5070,
        {"lr": None, "maddr": "[2001:db8::1]"},
        {},
    ),
    "sip:proxy.example.com.;lr": ("sip", None, None, "proxy.example.com.", None, {"lr": None}, {}),
    # RFC 4475 esc01: escapes stay as written, in user and in parameter names and values.
    "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31": (
        "sip",
        "cal%6Cer",
        None,
        "host5.example.net",
        None,
        {"%6C%72": None, "n%61me": "v%61lue%25%34%31"},
        {},
    ),
    # RFC 4475 intmeth: every user and password character RFC 3261 allows.
    "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    "@example.com": (
        "sip",
        "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
        "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)",
        "example.com",
        None,
        {},
        {},
    ),
    "SIP:Bob@Biloxi.COM": ("sip", "Bob", None, "Biloxi.COM", None, {}, {}),
}


@pytest.mark.parametrize("text", list(VALID_SIP_URIS))
def test_sip_uri_parses_and_prints_back(text: str) -> None:
    uri = SipUri.parse(text)
    scheme, user, password, host, port, params, headers = VALID_SIP_URIS[text]
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (scheme, user, password, host, port)
    assert uri.params == params
    assert list(uri.params) == list(params)
    assert uri.headers == headers
    assert SipUri.parse(str(uri)) == uri
    if text[:3] != "SIP":
        assert str(uri) == text


def test_scheme_is_lower_cased_and_the_rest_kept() -> None:
    assert str(SipUri.parse("SIP:Bob@Biloxi.COM")) == "sip:Bob@Biloxi.COM"


INVALID_URIS = [
    "sip:",  # no host
    "sip:@example.com",  # empty user
    "sip:alice@",  # empty host
    "sip:alice@exa mple.com",  # space
    "sip:alice@example.com:",  # empty port
    "sip:alice@example.com:65536",  # port out of range
    "sip:alice@example.com:50a",
    "sip:al%4@example.com",  # truncated escape
    "sip:al%zzce@example.com",  # not hex
    "sip:al<ice@example.com",  # '<' is not a user character
    "sip:alice@example..com",  # empty label
    "sip:alice@-example.com",  # label starts with '-'
    "sip:alice@example-.com",
    "sip:alice@example.123",  # toplabel must start with a letter
    "sip:alice@256.1.1.1",
    "sip:alice@[2001:db8::1",  # unclosed bracket
    "sip:alice@[::g]",
    "sip:alice@[fe80::1%eth0]",  # zone ids are not in the grammar
    "sip:alice@example.com;",  # empty parameter
    "sip:alice@example.com;a b=1",
    "sip:alice@example.com;x=%g1",
    "sip:alice@example.com?",  # empty header
    "sip:alice@example.com?subject",  # header without '='
    "sip:alice@example.com?a=<b>",
    "sip:alice@host_name.com",  # '_' is not a hostname character
    "sip:alice@a@b.com",
    "sip:user@example.com; lr",  # RFC 4475 lwsruri
    "<sip:user@example.com>",  # RFC 4475 ltgtruri
    "sip",
    "",
]


@pytest.mark.parametrize("text", INVALID_URIS)
def test_forbidden_uris_are_rejected(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_tel_uris() -> None:
    uri = SipUri.parse("tel:+1-201-555-0123;ext=1234;isub=6789")
    assert (uri.scheme, uri.user, uri.host, uri.port) == ("tel", "+1-201-555-0123", "", None)
    assert uri.params == {"ext": "1234", "isub": "6789"}
    assert str(uri) == "tel:+1-201-555-0123;ext=1234;isub=6789"
    local = parse_uri("TEL:7042;phone-context=example.com")
    assert isinstance(local, SipUri)
    assert (local.scheme, local.user, local.params) == ("tel", "7042", {"phone-context": "example.com"})
    assert str(local) == "tel:7042;phone-context=example.com"
    assert SipUri.parse("tel:*21#").user == "*21#"


@pytest.mark.parametrize(
    "text", ["tel:", "tel:+1+2", "tel:12 34", "tel:123;", "tel:123;ph_ctx=x", "tel:12@x"]
)
def test_bad_tel_uris_are_rejected(text: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(text)


def test_other_schemes_are_kept_opaque() -> None:
    uri = parse_uri("soap.beep://192.0.2.103:3002")
    assert uri == OpaqueUri("soap.beep://192.0.2.103:3002")
    assert uri.scheme == "soap.beep"
    assert str(uri) == "soap.beep://192.0.2.103:3002"
    assert parse_uri("nobodyKnowsThisScheme:totallyopaquecontent").scheme == "nobodyknowsthisscheme"
    assert isinstance(parse_uri("http://www.example.com/a?b=c"), OpaqueUri)
    for bad in ("1http://x", "http:", "http://a b", 'urn:"x"', "x:<y>"):
        with pytest.raises(SipParseError):
            parse_uri(bad)
    with pytest.raises(SipParseError):
        SipUri.parse("http://www.example.com")


@pytest.mark.parametrize(
    ("text", "transport"),
    [
        ("sip:a@example.com", "udp"),
        ("sip:a@example.com;transport=TCP", "tcp"),
        ("sip:a@example.com;Transport=tls", "tls"),
        ("sips:a@example.com", "tls"),
        ("sips:a@example.com;transport=tcp", "tls"),
        ("sips:a@example.com;transport=ws", "ws"),
        ("sip:a@example.com;transport=sctp", "sctp"),
    ],
)
def test_transport(text: str, transport: str) -> None:
    assert SipUri.parse(text).transport == transport


def test_with_params_copies() -> None:
    uri = SipUri.parse("sip:a@example.com;transport=udp")
    changed = uri.with_params({"maddr": "192.0.2.1"}, transport="tcp", lr=None)
    assert str(changed) == "sip:a@example.com;transport=tcp;maddr=192.0.2.1;lr"
    assert changed.lr
    assert not uri.lr
    assert str(uri) == "sip:a@example.com;transport=udp"
    assert changed.host_port == "example.com"
    assert SipUri.parse("sip:[::1]:5060").host_port == "[::1]:5060"


def test_built_uri_prints() -> None:
    uri = SipUri("sips", "bob", None, "biloxi.example.com", 5061, {"lr": None}, {"Subject": "hi"})
    assert str(uri) == "sips:bob@biloxi.example.com:5061;lr?Subject=hi"


def test_unescape() -> None:
    assert unescape("sips%3Auser%40example.com") == "sips:user@example.com"
    assert unescape("null-%00-null") == "null-\x00-null"
    assert unescape("plain") == "plain"
    assert unescape("%C3%A9") == "é"


def test_get_param_is_case_insensitive() -> None:
    params: dict[str, str | None] = {"Tag": "x1", "lr": None}
    assert get_param(params, "tag") == "x1"
    assert get_param(params, "LR") == ""
    assert get_param(params, "branch") is None


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("example.com", True),
        ("example.com.", True),
        ("a-b.c1.example", True),
        ("192.0.2.1", True),
        ("010.0.0.1", True),
        ("[::1]", True),
        ("[2001:db8::192.0.2.1]", True),
        ("1.2.3", False),
        ("1.2.3.4.5", False),
        ("example", True),
        ("ex_ample.com", False),
        ("", False),
        (".", False),
        ("::1", False),
    ],
)
def test_is_host(host: str, ok: bool) -> None:
    assert is_host(host) is ok


# text -> (display name, uri, params); uri printed.
NAME_ADDRS = {
    '"Alice Liddell" <sip:alice@example.com>;tag=1928301774': (
        "Alice Liddell",
        "sip:alice@example.com",
        {"tag": "1928301774"},
    ),
    "Bob <sip:bob@example.com>": ("Bob", "sip:bob@example.com", {}),
    # RFC 4475 lwsdisp: no LWS between display name and '<'.
    "caller<sip:caller@example.com>;tag=323": ("caller", "sip:caller@example.com", {"tag": "323"}),
    # Unquoted display names are token runs; LWS between them collapses to one space.
    "token1~` token2'+_ \t token3*%!.- <sip:mundane@example.com>": (
        "token1~` token2'+_ token3*%!.-",
        "sip:mundane@example.com",
        {},
    ),
    "<sip:carol@example.com>": (None, "sip:carol@example.com", {}),
    '"" <sip:empty@example.com>': ("", "sip:empty@example.com", {}),
    # RFC 4475 wsinv: quoted-pairs, LWS around ';' and '='.
    '"J Rosenberg \\\\\\""       <sip:jdrosen@example.com>   ;   tag = 98asjd8': (
        'J Rosenberg \\"',
        "sip:jdrosen@example.com",
        {"tag": "98asjd8"},
    ),
    # addr-spec form: the parameters belong to the header field, not the URI (RFC 4475 cparam01).
    "sip:+19725552222@gw1.example.net;unknownparam": (
        None,
        "sip:+19725552222@gw1.example.net",
        {"unknownparam": None},
    ),
    "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n": (
        None,
        "sip:vivekg@chair-dnrc.example.com",
        {"tag": "1918181833n"},
    ),
    '<sip:a@example.com>;q=0.7;expires=3600;+sip.instance="<urn:uuid:1-2>"': (
        None,
        "sip:a@example.com",
        {"q": "0.7", "expires": "3600", "+sip.instance": '"<urn:uuid:1-2>"'},
    ),
    "<sip:a@example.com;lr>;received=[2001:db8::1]": (
        None,
        "sip:a@example.com;lr",
        {"received": "[2001:db8::1]"},
    ),
    "<tel:+15551234567>": (None, "tel:+15551234567", {}),
    "<http://www.example.com>;tag=3234233": (None, "http://www.example.com", {"tag": "3234233"}),
    "isbn:2983792873": (None, "isbn:2983792873", {}),
}


@pytest.mark.parametrize("text", list(NAME_ADDRS))
def test_name_addr_forms(text: str) -> None:
    value = NameAddr.parse(text)
    display, uri, params = NAME_ADDRS[text]
    assert value.display_name == display
    assert str(value.uri) == uri
    assert value.params == params
    assert NameAddr.parse(str(value)) == value


def test_name_addr_control_characters_round_trip() -> None:
    # RFC 4475 intmeth: quoted-pairs carry BEL, NUL and DEL.
    value = NameAddr.parse('"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:x@example.com>')
    assert value.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert str(value) == '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:x@example.com>'
    assert NameAddr.parse(str(value)) == value


def test_name_addr_prints_with_brackets_and_tag() -> None:
    value = NameAddr.parse("sip:bob@example.com")
    assert str(value.with_params(tag="a6c85cf")) == "<sip:bob@example.com>;tag=a6c85cf"
    assert value.tag is None
    assert NameAddr.parse("<sip:x@y.com>;TAG=abc").tag == "abc"
    built = NameAddr(SipUri.parse("sip:bob@example.com"), 'Bob "B" Smith', {"tag": "9"})
    assert str(built) == '"Bob \\"B\\" Smith" <sip:bob@example.com>;tag=9'


INVALID_NAME_ADDRS = [
    "",
    '"Mr. J. User <sip:j.user@example.com>',  # RFC 4475 quotbal
    '"Watson, Thomas" < sip:t.watson@example.org >',  # RFC 4475 badaspec
    "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # RFC 4475 baddn
    "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # RFC 4475 regbadct
    '"Joe" <sip:joe@example.org>;;;;',  # RFC 4475 badinv01
    "<sip:joe@example.org",
    "<sip:joe@example.org> junk",
    '"Joe" sip:joe@example.org',
    "<sip:a@example.com>;tag=",
    "<sip:a@example.com>;tag=a b",
    '<sip:a@example.com>;x="open',
    "Joe Bob Briggs <urn:ipaddr:122.1.2.3> extra",
]


@pytest.mark.parametrize("text", INVALID_NAME_ADDRS)
def test_forbidden_name_addrs_are_rejected(text: str) -> None:
    with pytest.raises(SipParseError):
        NameAddr.parse(text)


def test_quote_string() -> None:
    assert quote_string("plain text") == '"plain text"'
    assert quote_string('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(ValueError):
        quote_string("line\r\nbreak")
