"""The real `activecall-api` process over HTTP: the guide's curl, the `activecall` client commands,
and a schemathesis run against its OpenAPI schema."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from api_helpers import GUIDE_CURL_BODY

from activecall.messages import CallAnswered, CallEnded, Hangup, Message, Originate, TranscriptFinal, decode
from activecall.registry import WorkerInfo
from activecall.testing.redis_server import free_port

BIN = Path(sys.executable).parent
TOKEN = "process-test-token"


@dataclass
class ApiProcess:
    process: subprocess.Popen[bytes]
    config: Path
    log: Path
    url: str
    prefix: str
    redis: redis.Redis

    def messages(self, stream: str) -> list[Message]:
        return [decode(fields[b"m"]) for _, fields in self.redis.xrange(self.prefix + stream)]

    def register(self, role: str, worker_id: str) -> None:
        info = WorkerInfo(id=worker_id, role=role, host="h", pid=1, metrics_port=9100, capacity=10)
        self.redis.hset(f"{self.prefix}workers:{role}", worker_id, info.to_json())

    def publish(self, call_id: str, message: Message) -> None:
        message.call_id = call_id
        self.redis.xadd(f"{self.prefix}call:{{{call_id}}}:events", {b"m": message.encode()})

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TZ": "UTC"}
        return subprocess.run(
            [str(BIN / "activecall"), *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=env,
        )

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0
        return self.log.read_text()


def start_api(tmp_path: Path, redis_url: str, tokens: list[str]) -> Iterator[ApiProcess]:
    port = free_port()
    prefix = f"api{secrets.token_hex(3)}:"
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "sales.md").write_text("---\ngreeting: Hello\n---\n")
    config = tmp_path / "active-call.toml"
    config.write_text(
        f'http_addr = "127.0.0.1:{port}"\n'
        f"[redis]\nurl = {json.dumps(redis_url)}\nprefix = {json.dumps(prefix)}\nheartbeat_ttl = 600.0\n"
        f"[playbooks]\ndirs = [{json.dumps(str(playbooks))}]\n"
        f"[api]\ntokens = {json.dumps(tokens)}\n"
    )
    log = tmp_path / "api.log"  # a file, not a pipe: a pipe nobody reads would block the logging
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(BIN / "activecall-api"), "--config", str(config), "--worker-id", "api-t"],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    url = f"http://127.0.0.1:{port}"
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/healthz", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                assert process.poll() is None, "activecall-api exited"
                assert time.monotonic() < deadline, "activecall-api never answered /healthz"
                time.sleep(0.1)
        yield ApiProcess(process, config, log, url, prefix, client)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        client.close()


@pytest.fixture
def api(tmp_path: Path, redis_url: str) -> Iterator[ApiProcess]:
    yield from start_api(tmp_path, redis_url, tokens=[])


@pytest.fixture
def api_with_token(tmp_path: Path, redis_url: str) -> Iterator[ApiProcess]:
    yield from start_api(tmp_path, redis_url, tokens=[TOKEN])


@pytest.mark.timeout(120)
def test_the_guides_curl_and_the_client_commands(api: ApiProcess) -> None:
    unready = httpx.get(api.url + "/readyz")
    assert (unready.status_code, unready.json()["reason"]) == (503, "no live sip-edge worker")
    api.register("sip-edge", "edge-1")
    api.register("media", "media-1")
    assert httpx.get(api.url + "/readyz").json() == {"status": "ready", "sip_edge": 1, "media": 1}
    for role in ("asr", "llm", "tts"):
        api.register(role, f"{role}-1")

    curl = subprocess.run(
        ["curl", "-sS", "-i", "-X", "POST", f"{api.url}/call", "-H", "Content-Type: application/json"]
        + ["-d", GUIDE_CURL_BODY],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    head, _, body = curl.stdout.partition("\n\n")  # text mode turned CRLF into LF
    assert head.startswith("HTTP/1.1 201 Created")
    guide_call = json.loads(body)["call_id"]
    assert f"location: /calls/{guide_call}" in head.lower()
    (originate,) = api.messages("edge:originate")
    assert isinstance(originate, Originate)
    assert (originate.call_id, originate.password, originate.enable_srtp) == (
        guide_call,
        "strongpassword",
        True,
    )

    placed = api.cli(
        "call", "tel:+4930123456", "--playbook", "sales.md", "--srtp", "--var", "customer_name=Sam"
    )
    assert placed.returncode == 0, placed.stderr
    cli_call, state = placed.stdout.split()
    assert state == "queued"
    cli_originate = api.messages("edge:originate")[1]
    assert isinstance(cli_originate, Originate)
    assert (cli_originate.call_id, cli_originate.callee, cli_originate.enable_srtp) == (
        cli_call,
        "tel:+4930123456",
        True,
    )
    assert cli_originate.variables == {"customer_name": "Sam"}

    refused = api.cli("call", "sip:18005551234@yourdomain.pstn.twilio.com", "--playbook", "sales.md")
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "HTTP 422: callee: Value error, callee: Twilio termination needs an E.164"
    )

    listing = api.cli("calls")
    assert listing.returncode == 0, listing.stderr
    assert {guide_call, cli_call} <= set(listing.stdout.split())
    assert listing.stdout.rstrip().endswith("2 active call(s)")

    api.redis.hset(f"{api.prefix}call:{{{guide_call}}}", "edge", "edge-1")
    hung = api.cli("hangup", guide_call)
    assert (hung.returncode, hung.stdout) == (0, f"hangup sent to {guide_call}\n")
    (hangup,) = api.messages("edge:edge-1:control")
    assert isinstance(hangup, Hangup) and (hangup.call_id, hangup.reason) == (guide_call, "api")

    api.publish(cli_call, CallAnswered(direction="outbound", callee="tel:+4930123456", ts=1700000000.25))
    api.publish(cli_call, TranscriptFinal(text="hello there", confidence=0.75, ts=1700000001.5))
    api.publish(cli_call, CallEnded(reason="bye", by="callee", status=200, ts=1700000002.0))
    tail = api.cli("tail", cli_call)
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].endswith('  call.state         state=queued previous="" reason=""')
    assert lines[1:] == [
        '22:13:20.250  call.answered      direction=outbound caller="" callee=tel:+4930123456 playbook="" '
        "sample_rate=8000",
        '22:13:21.500  transcript.final   text="hello there" start_ms=0 end_ms=0 confidence=0.75 utterance=0'
        ' speech_end_ms=0 decided_ts=0.0 eot="" p_finished=null reply_at_ms=0',
        "22:13:22.000  call.ended         reason=bye by=callee status=200",
    ]

    stderr = api.stop()
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    warnings = [line["msg"] for line in logs if line["level"] == "warning"]
    assert warnings == ["no API tokens configured: only loopback clients (127.0.0.0/8, ::1) are served"]
    assert "strongpassword" not in stderr
    for call_id in (guide_call, cli_call):
        record = api.redis.hgetall(f"{api.prefix}call:{{{call_id}}}")
        assert record and not any(b"strongpassword" in v for v in record.values())


@pytest.mark.timeout(120)
def test_schemathesis_finds_no_server_error(api_with_token: ApiProcess, tmp_path: Path) -> None:
    api = api_with_token
    for role in ("sip-edge", "media", "asr", "llm", "tts"):
        api.register(role, f"{role}-1")
    result = subprocess.run(
        [str(BIN / "schemathesis"), "run", f"{api.url}/openapi.json"]
        + ["--checks", "not_a_server_error", "--phases", "examples,coverage,fuzzing"]
        + ["--max-examples", "20", "--seed", "1", "--request-timeout", "5"]
        + ["--header", f"Authorization: Bearer {TOKEN}", "--suppress-health-check", "all"]
        # The event stream of a call that schemathesis itself placed lasts until the call ends,
        # which no edge makes happen here; tests of its own cover it.
        + ["--exclude-path", "/calls/{call_id}/events"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed\n", result.stdout)
    assert counts is not None, result.stdout[-2000:]
    generated, passed = int(counts[1]), int(counts[2])
    assert generated == passed >= 200
    assert "Tested: 13" in result.stdout  # every operation but the event stream
    api.stop()
