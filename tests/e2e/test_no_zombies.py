"""No zombies, with the real services and a real phone (baresip over TLS and SRTP): the sip-edge holding
a call is killed (SIGKILL). The system's own edge adopts the call from its state in Redis, tells the
phone its Contact (a re-INVITE over a new TLS connection), and the phone's BYE ends the call
everywhere: record, sessions, leases, cursors, legs, dialog state. (With no edge left at all, the media
worker's orphan rules and the reaper end such a call: tests/media/test_orphaned_legs.py and
tests/shared/test_reaper.py.)

The killed edge is a process of the test, so that it stays dead (``activecall up`` would start a child
of its own again); the system's own edge and media worker run the reaper. Short timeouts make it quick:
``rtp_timeout`` 3 s, ``orphan_grace`` 1 s, a sweep every second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from e2e_calls import call_streams, find_call, report, wait_events, wait_record

from activecall.bus import Keys, as_str
from activecall.contract import SESSION_ROLES
from activecall.messages import CallEnded, PlaybackStarted, SessionStart, decode
from activecall.registry import WorkerInfo
from activecall.testing.baresip import BaresipPhone
from activecall.testing.redis_server import free_port
from activecall.testing.system import System, running_system

SHORT_TIMES = {
    "ACTIVECALL_MEDIA__RTP_TIMEOUT": "3",
    "ACTIVECALL_MEDIA__ORPHAN_GRACE": "1",
    "ACTIVECALL_REDIS__REAPER_INTERVAL": "1",
    "ACTIVECALL_REDIS__REAPER_MIN_AGE": "0",
}
EDGE = "edge-doomed"
KEYS = Keys()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("zombies"), env=SHORT_TIMES) as running:
        yield running


def live_workers(client: redis.Redis, role: str) -> dict[str, WorkerInfo]:
    infos = map(WorkerInfo.from_json, client.hgetall(KEYS.workers(role)).values())
    return {info.id: info for info in infos if info.is_live(5.0)}


@pytest.fixture
def doomed_edge(system: System, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A sip-edge of the test on a TLS port of its own, live in the registry; yields it and the port."""
    tls_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(SHORT_TIMES, ACTIVECALL_UDP_PORT=str(free_port()), ACTIVECALL_TLS_PORT=str(tls_port))
    command = [sys.executable, "-m", "activecall.sip_edge", "--config", str(system.config)]
    command += ["--worker-id", EDGE, "--metrics-port", "0"]
    log = tmp_path / "edge.log"
    process = subprocess.Popen(command, stderr=log.open("wb"), env=env)
    client = redis.Redis.from_url(system.redis_url)
    try:
        deadline = time.monotonic() + 60
        while EDGE not in live_workers(client, "sip-edge"):
            assert process.poll() is None, f"the edge exited at start: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the edge did not beat within 60 s"
            time.sleep(0.2)
        yield process, tls_port
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
        process.wait()


def session_entries(client: redis.Redis, call_id: str) -> list[str]:
    found = []
    for role in SESSION_ROLES:
        for entry_id, fields in client.xrange(KEYS.sessions(role)):
            message = decode(fields[b"m"])
            if isinstance(message, SessionStart) and message.call_id == call_id:
                found.append(f"{role}:{as_str(entry_id)}")
    return found


def test_a_killed_edge_s_call_is_adopted_and_ends_everywhere(
    system: System, doomed_edge: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    edge, tls_port = doomed_edge
    phone = BaresipPhone(tmp_path / "phone", None, "zombie", certificate=system.certificate).start()
    client = redis.Redis.from_url(system.redis_url)
    try:
        assert phone.dial(f"sip:agent@127.0.0.1:{tls_port};transport=tls")["ok"]
        phone.wait_event("CALL_ESTABLISHED", 30)
        call_id = find_call(system.redis_url, "zombie").call_id
        wait_events(
            system.redis_url,
            call_id,
            lambda s: any(isinstance(e, PlaybackStarted) for e in s.events),
            60,
            "the agent speaking",
        )
        record = wait_record(system.redis_url, call_id, lambda r: bool(r.media_worker))
        assert record.edge == EDGE and len(session_entries(client, call_id)) == 3
        held = KEYS.media_legs(record.media_worker)
        deadline = time.monotonic() + 10  # the worker rewrites the set on its next beat
        while not client.sismember(held, call_id):
            assert time.monotonic() < deadline, "the media worker does not list the call"
            time.sleep(0.1)

        edge.send_signal(signal.SIGKILL)
        edge.wait()
        killed_at = time.time()
        adopted = wait_record(system.redis_url, call_id, lambda r: r.edge not in ("", EDGE), timeout=30)
        report(f"edge killed -> call adopted by {adopted.edge} after {time.time() - killed_at:.1f} s")
        assert adopted.state == "answered"
        time.sleep(1.0)  # the adopter's target refresh (a re-INVITE over a new TLS connection)
        phone.hangup()  # its BYE goes where the refresh said: to the adopting edge
        phone.wait_event("CALL_CLOSED", 40)
        ended = wait_record(system.redis_url, call_id, lambda r: r.state == "ended", timeout=60)
        report(f"adopted call ended: {ended.end_reason!r} {ended.ended - killed_at:.1f} s after the kill")
    finally:
        phone.stop()
    try:
        streams = call_streams(system.redis_url, call_id)
        assert [e.by for e in streams.of_type(CallEnded)] == ["remote"], streams.of_type(CallEnded)
        assert not client.sismember(KEYS.calls_active(), call_id)
        deadline = time.monotonic() + 15  # the sessions stop on call.ended and clean up after themselves
        while live_workers(client, "media")[record.media_worker].load or client.sismember(held, call_id):
            assert time.monotonic() < deadline, "the media worker still holds a leg"
            time.sleep(0.2)
        while session_entries(client, call_id) or client.keys(f"{KEYS.call(call_id)}:lease:*"):
            assert time.monotonic() < deadline, "sessions of the ended call left behind"
            time.sleep(0.2)
        assert not client.keys(f"{KEYS.call(call_id)}:cursor:*")
        assert not client.exists(KEYS.dialog(call_id))
        for key in (KEYS.call(call_id), KEYS.events(call_id), KEYS.audio_in(call_id)):
            assert client.ttl(key) > 0, key
    finally:
        client.close()
