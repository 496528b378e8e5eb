"""Digest authentication: RFC 2617 / RFC 7616 golden vectors, nc counting, quoting, server side."""

from __future__ import annotations

import hashlib

import pytest

from activecall.sip_edge.sip.syntax.digest import (
    CHALLENGE_HEADERS,
    Challenge,
    Credentials,
    DigestClient,
    DigestError,
    DigestParseError,
    NonceSource,
    NonceState,
    UnsupportedChallengeError,
    digest_response,
    make_challenge,
    parse_auth_params,
    select_challenge,
    verify_authorization,
)

# RFC 2617 section 3.5.
RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, '
    'cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

# RFC 7616 section 3.9.1, with the line folding of the RFC's figures.
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_PASSWORD = "Circle of Life"
RFC7616_MD5_RESPONSE = "8ca523f5e9506fed4657c9700eebdbec"
RFC7616_SHA256_RESPONSE = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def rfc7616_challenge(algorithm: str) -> str:
    return (
        'Digest\r\n    realm="http-auth@example.org",\r\n    qop="auth, auth-int",\r\n'
        f'    algorithm={algorithm},\r\n    nonce="{RFC7616_NONCE}",\r\n    opaque="{RFC7616_OPAQUE}"'
    )


def rfc7616_authorization(algorithm: str, response: str) -> str:
    return (
        'Digest username="Mufasa",\r\n    realm="http-auth@example.org",\r\n'
        f'    uri="/dir/index.html",\r\n    algorithm={algorithm},\r\n    nonce="{RFC7616_NONCE}",\r\n'
        f'    nc=00000001,\r\n    cnonce="{RFC7616_CNONCE}",\r\n    qop=auth,\r\n'
        f'    response="{response}",\r\n    opaque="{RFC7616_OPAQUE}"'
    )


def client(username: str, password: str, *cnonces: str) -> DigestClient:
    supply = iter(cnonces)
    return DigestClient(username, password, cnonce_factory=lambda: next(supply))


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# --- Golden vectors ---------------------------------------------------------------------------


def test_rfc2617_example_authorization_exact() -> None:
    value = client("Mufasa", "Circle Of Life", "0a4f113b").authorize(
        RFC2617_CHALLENGE, "GET", "/dir/index.html"
    )
    assert value == RFC2617_AUTHORIZATION


def test_rfc2617_challenge_fields() -> None:
    challenge = Challenge.parse(RFC2617_CHALLENGE)
    assert challenge.realm == "testrealm@host.com"
    assert challenge.nonce == "dcd98b7102dd2f0e8b11d0f600bfb0c093"
    assert challenge.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.algorithm is None
    assert challenge.hash_algorithm == "MD5"
    assert challenge.stale is False


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [("MD5", RFC7616_MD5_RESPONSE), ("SHA-256", RFC7616_SHA256_RESPONSE)],
)
def test_rfc7616_examples(algorithm: str, response: str) -> None:
    digest_client = client("Mufasa", RFC7616_PASSWORD, RFC7616_CNONCE)
    value = digest_client.authorize(rfc7616_challenge(algorithm), "GET", "/dir/index.html")
    assert value == (
        f'Digest username="Mufasa", realm="http-auth@example.org", nonce="{RFC7616_NONCE}", '
        f'uri="/dir/index.html", algorithm={algorithm}, qop=auth, nc=00000001, '
        f'cnonce="{RFC7616_CNONCE}", response="{response}", opaque="{RFC7616_OPAQUE}"'
    )


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [("MD5", RFC7616_MD5_RESPONSE), ("SHA-256", RFC7616_SHA256_RESPONSE)],
)
def test_rfc7616_authorization_verifies_on_server(algorithm: str, response: str) -> None:
    value = rfc7616_authorization(algorithm, response)
    creds = Credentials.parse(value)
    assert (creds.username, creds.nc, creds.qop, creds.algorithm) == ("Mufasa", 1, "auth", algorithm)
    result = verify_authorization(value, "GET", lambda user, realm: RFC7616_PASSWORD, uri="/dir/index.html")
    assert result.ok and result.username == "Mufasa"
    wrong = verify_authorization(value, "POST", lambda user, realm: RFC7616_PASSWORD)
    assert (wrong.ok, wrong.reason) == (False, "wrong response")


def test_digest_response_function_matches_rfc2617() -> None:
    response = digest_response(
        algorithm=None,
        username="Mufasa",
        password="Circle Of Life",
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc=1,
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


# --- Client behaviour -------------------------------------------------------------------------

TWILIO_407 = (
    'Digest realm="sip.twilio.com",qop="auth",nonce="YWf3Xq9hN0p0sAWGgzq7Vn5cR3l2",'
    'opaque="c2a1d1ae3cf1f6d1ba4cd4d1b4e5c6a7"'
)


def test_twilio_challenge_without_algorithm_means_md5() -> None:
    challenge = Challenge.parse(TWILIO_407)
    assert challenge.algorithm is None and challenge.hash_algorithm == "MD5"
    value = client("active-call", "s3cret", "deadbeef").authorize(
        challenge, "INVITE", "sip:+15551234567@x.pstn.twilio.com"
    )
    creds = Credentials.parse(value)
    assert "algorithm=" not in value
    ha1 = md5("active-call:sip.twilio.com:s3cret")
    ha2 = md5("INVITE:sip:+15551234567@x.pstn.twilio.com")
    assert creds.response == md5(f"{ha1}:YWf3Xq9hN0p0sAWGgzq7Vn5cR3l2:00000001:deadbeef:auth:{ha2}")
    assert creds.opaque == "c2a1d1ae3cf1f6d1ba4cd4d1b4e5c6a7"
    assert (creds.qop, creds.nc, creds.cnonce) == ("auth", 1, "deadbeef")


def test_nc_increments_for_same_nonce_and_restarts_for_new_nonce() -> None:
    digest_client = client("alice", "pw", "c1", "c2", "c3")
    first = Credentials.parse(digest_client.authorize(TWILIO_407, "INVITE", "sip:bob@example.com"))
    second = Credentials.parse(digest_client.authorize(TWILIO_407, "BYE", "sip:bob@example.com"))
    assert (first.nc, second.nc) == (1, 2)
    assert (first.cnonce, second.cnonce) == ("c1", "c2")
    assert digest_client.nonce_count("sip.twilio.com") == 2
    renewed = TWILIO_407.replace("YWf3Xq9hN0p0sAWGgzq7Vn5cR3l2", "bmV3LW5vbmNl") + ", stale=TRUE"
    third = Credentials.parse(digest_client.authorize(renewed, "INVITE", "sip:bob@example.com"))
    assert (third.nonce, third.nc, third.cnonce) == ("bmV3LW5vbmNl", 1, "c3")


def test_nc_is_per_realm_nonce() -> None:
    digest_client = client("alice", "pw", "c1", "c2", "c3")
    other = TWILIO_407.replace("sip.twilio.com", "other.example")
    assert Credentials.parse(digest_client.authorize(TWILIO_407, "INVITE", "sip:a@b")).nc == 1
    assert Credentials.parse(digest_client.authorize(other, "INVITE", "sip:a@b")).nc == 1
    assert Credentials.parse(digest_client.authorize(TWILIO_407, "INVITE", "sip:a@b")).nc == 2


def test_nc_is_hexadecimal() -> None:
    digest_client = client("alice", "pw", *[f"c{i}" for i in range(20)])
    values = [digest_client.authorize(TWILIO_407, "OPTIONS", "sip:a@b") for _ in range(16)]
    assert "nc=0000000f" in values[14]
    assert "nc=00000010" in values[15]


def test_reauthorize_reuses_last_nonce() -> None:
    digest_client = client("alice", "pw", "c1", "c2")
    assert digest_client.reauthorize("REGISTER", "sip:example.com") is None
    digest_client.authorize(TWILIO_407, "REGISTER", "sip:example.com")
    again = digest_client.reauthorize("REGISTER", "sip:example.com")
    assert again is not None
    creds = Credentials.parse(again)
    assert (creds.nonce, creds.nc, creds.cnonce) == ("YWf3Xq9hN0p0sAWGgzq7Vn5cR3l2", 2, "c2")
    assert digest_client.reauthorize("REGISTER", "sip:example.com", realm="nowhere") is None


def test_opaque_absent_is_not_sent() -> None:
    value = client("u", "p", "c").authorize('Digest realm="r", nonce="n", qop="auth"', "INVITE", "sip:x@y")
    assert "opaque" not in value
    assert Credentials.parse(value).opaque is None


def test_no_qop_uses_rfc2069_form() -> None:
    value = client("u", "p").authorize('Digest realm="r", nonce="n"', "REGISTER", "sip:y")
    creds = Credentials.parse(value)
    assert value == f'Digest username="u", realm="r", nonce="n", uri="sip:y", response="{creds.response}"'
    assert creds.response == md5(f"{md5('u:r:p')}:n:{md5('REGISTER:sip:y')}")


def test_auth_int_covers_the_body() -> None:
    body = b"v=0\r\n"
    challenge = 'Digest realm="r", nonce="n", qop="auth-int"'
    value = client("u", "p", "c").authorize(challenge, "INVITE", "sip:y", body)
    creds = Credentials.parse(value)
    assert creds.qop == "auth-int"
    ha2 = md5(f"INVITE:sip:y:{hashlib.md5(body).hexdigest()}")
    assert creds.response == md5(f"{md5('u:r:p')}:n:00000001:c:auth-int:{ha2}")
    lookup = lambda user, realm: "p"  # noqa: E731
    assert verify_authorization(value, "INVITE", lookup, body=body).ok
    assert not verify_authorization(value, "INVITE", lookup, body=b"v=1\r\n").ok


def test_md5_sess_keeps_cnonce_for_the_nonce() -> None:
    challenge = 'Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess'
    digest_client = client("u", "p", "first", "second")
    one = Credentials.parse(digest_client.authorize(challenge, "INVITE", "sip:y"))
    two = Credentials.parse(digest_client.authorize(challenge, "INVITE", "sip:y"))
    assert (one.cnonce, two.cnonce, two.nc) == ("first", "first", 2)
    ha1 = md5(f"{md5('u:r:p')}:n:first")
    assert two.response == md5(f"{ha1}:n:00000002:first:auth:{md5('INVITE:sip:y')}")
    assert verify_authorization(str(two), "INVITE", lambda user, realm: "p").ok


@pytest.mark.parametrize("algorithm", ["SHA-256-sess", "SHA-512-256", "SHA-512-256-sess", "sha-256"])
def test_other_algorithms_round_trip_with_server(algorithm: str) -> None:
    challenge = make_challenge("example.com", nonce="abc", algorithm=algorithm, opaque="op")
    value = client("bob", "zanzibar", "cn").authorize(str(challenge), "REGISTER", "sip:example.com")
    assert f"algorithm={algorithm}," in value
    assert verify_authorization(value, "REGISTER", lambda user, realm: "zanzibar").ok
    assert not verify_authorization(value, "REGISTER", lambda user, realm: "zanzibaR").ok


def test_sha512_256_hash_is_used() -> None:
    value = client("bob", "zanzibar", "cn").authorize(
        'Digest realm="r", nonce="n", qop="auth", algorithm=SHA-512-256', "INVITE", "sip:y"
    )

    def h(text: str) -> str:
        return hashlib.new("sha512_256", text.encode()).hexdigest()

    expected = h(f"{h('bob:r:zanzibar')}:n:00000001:cn:auth:{h('INVITE:sip:y')}")
    assert Credentials.parse(value).response == expected


def test_unsupported_algorithm_is_refused_before_counting() -> None:
    digest_client = client("u", "p", "c")
    with pytest.raises(UnsupportedChallengeError, match="SHA-999"):
        digest_client.authorize('Digest realm="r", nonce="n", algorithm=SHA-999', "INVITE", "sip:y")
    assert digest_client.nonce_count("r") == 0


def test_unsupported_qop_is_refused() -> None:
    with pytest.raises(UnsupportedChallengeError, match="auth-conf"):
        client("u", "p", "c").authorize('Digest realm="r", nonce="n", qop="auth-conf"', "INVITE", "sip:y")


def test_select_challenge_prefers_strongest_supported() -> None:
    values = [
        'Digest realm="r", nonce="1", algorithm=MD5, qop="auth"',
        'Digest realm="r", nonce="2", algorithm=SHA-999, qop="auth"',
        'Digest realm="r", nonce="3", algorithm=SHA-256, qop="auth"',
    ]
    assert select_challenge(values).nonce == "3"
    assert select_challenge(values[:2]).nonce == "1"
    with pytest.raises(UnsupportedChallengeError):
        select_challenge(values[1:2])


# --- Quoting and parsing ----------------------------------------------------------------------


def test_quoting_escapes_quote_and_backslash() -> None:
    digest_client = client('a"b\\c', "p", "c")
    value = digest_client.authorize('Digest realm="r", nonce="n", qop="auth"', "INVITE", "sip:y")
    assert value.startswith('Digest username="a\\"b\\\\c", realm="r", nonce="n", uri="sip:y", qop=auth, ')
    assert Credentials.parse(value).username == 'a"b\\c'
    assert verify_authorization(value, "INVITE", lambda user, realm: "p" if user == 'a"b\\c' else None).ok


def test_quoted_values_keep_commas_and_equals() -> None:
    challenge = Challenge.parse('digest realm="a, b=c", NONCE="x\\"y", Stale=true, foo=bar')
    assert (challenge.realm, challenge.nonce, challenge.stale) == ("a, b=c", 'x"y', True)
    assert challenge.extra == {"foo": "bar"}


def test_unquoted_base64_nonce_is_accepted() -> None:
    scheme, params = parse_auth_params("Digest realm=r , nonce=ab/c+d==,qop=auth")
    assert scheme == "Digest"
    assert params == {"realm": "r", "nonce": "ab/c+d==", "qop": "auth"}


def test_challenge_serialization() -> None:
    challenge = make_challenge("sip.example.com", nonce="n0nce", opaque="0paque", stale=True)
    assert str(challenge) == (
        'Digest realm="sip.example.com", qop="auth", nonce="n0nce", opaque="0paque", '
        "stale=TRUE, algorithm=MD5"
    )
    assert Challenge.parse(str(challenge)) == challenge


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Basic realm="r"', "not a Digest value"),
        ('Digest realm="r", nonce="n', "unterminated quoted string"),
        ('Digest realm="r"', "missing nonce parameter"),
        ('Digest realm="r" nonce="n"', "expected ','"),
        ('Digest realm="r", realm="s", nonce="n"', "duplicate parameter: realm"),
        ("Digest realm=, nonce=n", "empty parameter value"),
        ("", "missing auth scheme"),
    ],
)
def test_malformed_challenges(value: str, message: str) -> None:
    with pytest.raises(DigestParseError, match=message):
        Challenge.parse(value)


def test_malformed_nc_is_rejected() -> None:
    value = 'Digest username="u", realm="r", nonce="n", uri="sip:y", response="0", qop=auth, nc=1, cnonce="c"'
    with pytest.raises(DigestParseError, match="nc must be eight hex digits"):
        Credentials.parse(value)


def test_digest_error_is_value_error() -> None:
    assert issubclass(DigestParseError, ValueError) and issubclass(DigestParseError, DigestError)


def test_header_names_per_status() -> None:
    assert CHALLENGE_HEADERS[401] == ("WWW-Authenticate", "Authorization")
    assert CHALLENGE_HEADERS[407] == ("Proxy-Authenticate", "Proxy-Authorization")


# --- Server side ------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_registrar_flow_with_nonce_source() -> None:
    clock = Clock(1_700_000_000.0)
    nonces = NonceSource(secret=b"k" * 32, lifetime=60, clock=clock)
    challenge = make_challenge("pbx.example", nonce=nonces.issue(), opaque="o1")
    digest_client = client("1001", "pass1001", "c1", "c2")
    value = digest_client.authorize(str(challenge), "REGISTER", "sip:pbx.example")
    passwords = {"1001": "pass1001"}

    def lookup(user: str, realm: str) -> str | None:
        return passwords.get(user) if realm == "pbx.example" else None

    ok = verify_authorization(
        value, "REGISTER", lookup, realm="pbx.example", uri="sip:pbx.example", nonce_check=nonces.check
    )
    assert ok.ok and ok.username == "1001"
    clock.now += 61
    stale = verify_authorization(value, "REGISTER", lookup, nonce_check=nonces.check)
    assert (stale.ok, stale.stale, stale.reason) == (False, True, "stale nonce")


def test_nonce_source_rejects_foreign_and_tampered_nonces() -> None:
    clock = Clock(1000.0)
    nonces = NonceSource(secret=b"a" * 32, lifetime=30, clock=clock)
    nonce = nonces.issue()
    assert nonces.check(nonce) is NonceState.VALID
    assert NonceSource(secret=b"b" * 32, clock=clock).check(nonce) is NonceState.INVALID
    assert nonces.check(nonce[:-2] + ("A" if nonce[-2] != "A" else "B") + nonce[-1]) is NonceState.INVALID
    assert nonces.check("not base64 !") is NonceState.INVALID
    clock.now = 999.0  # issued in the future of the checker's clock
    assert nonces.check(nonce) is NonceState.STALE


def test_verify_refuses_foreign_nonce_even_with_right_password() -> None:
    nonces = NonceSource(secret=b"s" * 32)
    value = client("u", "p", "c").authorize(
        'Digest realm="r", nonce="made-up", qop="auth"', "INVITE", "sip:y"
    )
    result = verify_authorization(value, "INVITE", lambda user, realm: "p", nonce_check=nonces.check)
    assert (result.ok, result.stale, result.reason) == (False, False, "unknown nonce")


def test_verify_pins_realm_and_uri() -> None:
    value = client("u", "p", "c").authorize('Digest realm="r", nonce="n", qop="auth"', "INVITE", "sip:y")
    wrong_realm = verify_authorization(value, "INVITE", lambda user, realm: "p", realm="other")
    assert (wrong_realm.ok, wrong_realm.reason) == (False, "wrong realm 'r'")
    wrong_uri = verify_authorization(value, "INVITE", lambda user, realm: "p", uri="sip:z")
    assert (wrong_uri.ok, wrong_uri.reason) == (False, "digest uri does not match the Request-URI")
    assert verify_authorization(value, "INVITE", lambda user, realm: "p", realm="r", uri="sip:y").ok


def test_verify_unknown_user_and_garbage() -> None:
    value = client("u", "p", "c").authorize('Digest realm="r", nonce="n", qop="auth"', "INVITE", "sip:y")
    assert verify_authorization(value, "INVITE", lambda user, realm: None).reason == "unknown user"
    garbage = verify_authorization('Digest username="u"', "INVITE", lambda user, realm: "p")
    assert (garbage.ok, garbage.reason) == (False, "missing realm parameter")
    no_nc = value.replace(", nc=00000001", "")
    assert verify_authorization(no_nc, "INVITE", lambda user, realm: "p").reason == "qop needs nc and cnonce"


def test_qop_without_nc_cannot_be_computed() -> None:
    with pytest.raises(DigestError, match="qop needs nc and cnonce"):
        digest_response(
            algorithm="MD5", username="u", password="p", realm="r", nonce="n", method="M", uri="u", qop="auth"
        )
