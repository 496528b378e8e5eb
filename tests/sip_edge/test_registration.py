"""REGISTER with digest against a real registrar (Kamailio, Debian package), refreshed and removed."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sip_harness import EdgeFactory, poll

from activecall.config import SipRegistration
from activecall.sip_edge.sip.ua.registration import (
    Registration,
    refresh_delay,
    registration_uri,
    sends_register,
)
from activecall.testing.redis_server import free_port

# A registrar that challenges every REGISTER (qop=auth, nonce counts checked) and accepts only
# edgeuser/s3cret; each stored binding is logged with its CSeq and Expires.
KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
modparam("auth", "nonce_count", 1)
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 1)
modparam("registrar", "max_expires", 3600)
request_route {{
    if (is_method("REGISTER")) {{
        if (!pv_www_authenticate("kamailio.test", "s3cret", "0")) {{
            www_challenge("kamailio.test", "1");
            exit;
        }}
        if ($au != "edgeuser") {{ sl_send_reply("403", "Forbidden"); exit; }}
        consume_credentials();
        if (!save("location")) {{ sl_reply_error(); exit; }}
        xlog("L_ERR", "BOUND $au cseq=$cs expires=$hdr(Expires) callid=$ci\\n");
        exit;
    }}
    sl_send_reply("404", "Not Here");
}}
"""


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    port = free_port(socket.SOCK_DGRAM)
    config = tmp_path / "kamailio.cfg"
    config.write_text(KAMAILIO_CFG.format(port=port))
    log = tmp_path / "kamailio.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-f", str(config), "-DD", "-E", "-Y", str(tmp_path), "-m", "32", "-M", "4"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while "Listening on" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "kamailio did not start"
            time.sleep(0.05)
        time.sleep(0.1)
        yield port, log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bindings(log: Path) -> list[tuple[str, int, int, str]]:
    """(user, CSeq, Expires, Call-ID) of every binding Kamailio stored, in order."""
    pattern = r"BOUND (\S+) cseq=(\d+) expires=(\d+) callid=(\S+)"
    return [(u, int(c), int(e), i) for u, c, e, i in re.findall(pattern, log.read_text(errors="replace"))]


async def test_registration_is_challenged_refreshed_and_removed(
    start_edge: EdgeFactory, kamailio: tuple[int, Path]
) -> None:
    port, log = kamailio
    entry = SipRegistration(
        name="kam",
        username="edgeuser",
        password="s3cret",
        server=f"127.0.0.1:{port}",
        realm="kamailio.test",
        expires=2,
    )
    harness = await start_edge(sip_registrations=[entry])
    (registration,) = harness.edge.registrations
    await poll(lambda: registration.registrations >= 3, within=10)
    assert registration.granted == 2
    await registration.stop()
    assert registration.granted == 0
    stored = await poll(lambda: len(found := bindings(log)) >= 4 and found)  # Kamailio replies, then logs
    assert [(user, expires) for user, _, expires, _ in stored] == [("edgeuser", 2)] * 3 + [("edgeuser", 0)]
    assert len({call_id for *_, call_id in stored}) == 1  # one Call-ID for the whole registration
    cseqs = [cseq for _, cseq, _, _ in stored]
    assert cseqs == sorted(cseqs) and len(set(cseqs)) == 4
    # Refreshes re-use the nonce with nc 2, 3, ...: only the first REGISTER is challenged.
    assert cseqs[1:] == [cseqs[0] + 1, cseqs[0] + 2, cseqs[0] + 3]


async def test_a_wrong_password_is_not_retried_in_a_loop(
    start_edge: EdgeFactory, kamailio: tuple[int, Path]
) -> None:
    port, log = kamailio
    harness = await start_edge()
    entry = SipRegistration(name="bad", username="edgeuser", password="wrong", server=f"127.0.0.1:{port}")
    registration = Registration(harness.edge.ua, entry)
    assert await registration.register(60) == 0
    assert not registration.bound.is_set()
    assert bindings(log) == []


def test_server_forms_and_refresh_timing() -> None:
    def uri(server: str, transport: str = "udp") -> str:
        entry = SipRegistration(name="x", username="u", password="p", server=server, transport=transport)  # type: ignore[arg-type]
        return str(registration_uri(entry))

    assert uri("pbx.example.com") == "sip:pbx.example.com"
    assert uri("pbx.example.com:5080", "tcp") == "sip:pbx.example.com:5080;transport=tcp"
    assert uri("sips:pbx.example.com", "tls") == "sips:pbx.example.com"
    assert uri("sip:pbx.example.com;transport=tls", "tcp") == "sip:pbx.example.com;transport=tls"
    assert (refresh_delay(3600), refresh_delay(60), refresh_delay(2)) == (3240.0, 54.0, 1.0)


async def test_twilio_termination_and_register_false_entries_send_no_register(
    start_edge: EdgeFactory,
) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(1.5)
    try:
        twilio = SipRegistration(
            name="twilio", username="active-call", password="p", server="yourdomain.pstn.twilio.com"
        )
        quiet = SipRegistration(
            name="pbx",
            username="u",
            password="p",
            server=f"127.0.0.1:{listener.getsockname()[1]}",
            register=False,
        )
        harness = await start_edge(sip_registrations=[twilio, quiet])
        assert harness.edge.registrations == []
        with pytest.raises(TimeoutError):
            listener.recvfrom(65536)  # nothing reaches the PBX that takes no REGISTER
    finally:
        listener.close()
    assert [sends_register(e) for e in (twilio, quiet, replace(quiet, register=True))] == [False, False, True]
