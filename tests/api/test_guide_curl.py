"""The guide's curl (GUIDE-twilio.md step 4) against the system `make run` starts: the edge dials a SIPp
trunk on loopback with SRTP, answers its 407 with the request's credentials, and the call is answered."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import GUIDE_CURL_BODY

from activecall.testing.sipp import Sipp
from activecall.testing.system import System, running_system

SCENARIO = Path(__file__).parent / "scenarios" / "uas_guide_trunk.xml"
# The request of the integration guide; only the callee's host and port are changed, to reach SIPp.
GUIDE_CALLEE = "sip:+18005551234@yourdomain.pstn.twilio.com"
TRACE_SEPARATOR = re.compile(r"^-{20,}.*$", re.MULTILINE)

pytestmark = pytest.mark.slow


def guide_curl(api: str, callee: str) -> list[str]:
    """The guide's command line, pointed at ``api``, with its headers printed (-i) and a time limit."""
    body = GUIDE_CURL_BODY.replace(GUIDE_CALLEE, callee)
    return ["curl", "-sS", "-i", "--max-time", "10", "-X", "POST", f"{api}/call"] + [
        "-H", "Content-Type: application/json", "-d", body,
    ]  # fmt: skip


def received_invites(trace: str) -> list[str]:
    """The INVITEs in SIPp's message trace (-trace_msg), each as its text from the request line on."""
    invites = []
    for entry in TRACE_SEPARATOR.split(trace):
        head, _, message = entry.strip().partition("\n\n")
        if "message received" in head and message.startswith("INVITE "):
            invites.append(message)
    return invites


def header(message: str, name: str) -> str:
    (value,) = {line.split(":", 1)[1].strip() for line in message.splitlines() if line.startswith(name + ":")}
    return value


def expected_digest(credentials: str, method: str, password: str) -> str:
    """The response RFC 2617 section 3.2.2 gives for these parameters (qop=auth, MD5)."""
    params = dict(re.findall(r'(\w+)="?([^",]+)"?', credentials.partition(" ")[2]))

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{params['username']}:{params['realm']}:{password}")
    ha2 = md5(f"{method}:{params['uri']}")
    return md5(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}")


def wait_for_state(system: System, call_id: str, states: set[str], within: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        call: dict[str, Any] = httpx.get(f"{system.api}/calls/{call_id}", timeout=5).json()
        if call["state"] in states or time.monotonic() > deadline:
            return call
        time.sleep(0.1)


@pytest.mark.timeout(90)
def test_the_guides_curl_dials_srtp_and_answers_the_407(tmp_path: Path) -> None:
    started = time.monotonic()
    trunk = Sipp(SCENARIO, tmp_path / "sipp", timeout_s=45)
    with running_system(tmp_path / "system", wait_s=45) as system:
        trunk.start()
        try:
            callee = f"sip:+18005551234@127.0.0.1:{trunk.local_port}"
            curl = subprocess.run(
                guide_curl(system.api, callee), capture_output=True, text=True, timeout=20, check=True
            )
            head, _, body = curl.stdout.partition("\n\n")  # text mode turned CRLF into LF
            print(f"\ncurl: {head.splitlines()[0]} {body}")
            assert head.startswith(("HTTP/1.1 201", "HTTP/1.1 200"))
            call_id = json.loads(body)["call_id"]
            assert f"location: /calls/{call_id}" in head.lower()

            answered = wait_for_state(system, call_id, {"answered", "ended", "failed", "rejected"})
            assert answered["state"] == "answered", answered
            hangup = httpx.post(f"{system.api}/calls/{call_id}/hangup", json={}, timeout=5)
            assert hangup.status_code == 202, hangup.text
            result = trunk.wait()
        finally:
            trunk.kill()
        ended = wait_for_state(system, call_id, {"ended"})

    assert result.ok, result.describe()
    invites = {header(invite, "CSeq"): invite for invite in reversed(received_invites(result.messages))}
    first, retried = invites.pop("1 INVITE"), invites.pop("2 INVITE")  # the first of any retransmissions
    assert not invites
    for invite in (first, retried):
        offer = invite.partition("\n\n")[2]
        assert re.search(r"^m=audio \d+ RTP/SAVP ", offer, re.MULTILINE), offer
        assert re.search(r"^a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:", offer, re.MULTILINE), offer
    assert "Proxy-Authorization:" not in first
    assert header(first, "Call-ID") == header(retried, "Call-ID")
    credentials = header(retried, "Proxy-Authorization")
    assert 'username="active-call"' in credentials and 'realm="yourdomain.pstn.twilio.com"' in credentials
    response = re.search(r'response="([0-9a-f]+)"', credentials)
    assert response is not None and response[1] == expected_digest(credentials, "INVITE", "strongpassword")

    assert (ended["state"], ended["end_reason"], ended["direction"], ended["playbook"]) == (
        "ended",
        "api",
        "outbound",
        "sales.md",
    )
    assert ended["callee"] == "+18005551234" and ended["sip_call_id"] == header(first, "Call-ID")
    assert 0 < ended["answered"] <= ended["ended"]
    offered = re.findall(r"^(m=audio .*|a=crypto:\S+ \S+)", first, re.MULTILINE)
    print(
        f"sipp: INVITE offered {offered}; 407 answered with {credentials.split(', uri=')[0]}; "
        f"call {call_id} answered, then ended by the API hangup, in {time.monotonic() - started:.1f} s"
    )
