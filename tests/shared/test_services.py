"""The six services as real processes: `activecall up`, health, heartbeats, drain and stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from activecall.testing.redis_server import free_port

BIN = Path(sys.executable).parent
ROLES = ["sip-edge", "media", "asr", "llm", "tts", "api"]


def write_config(tmp_path: Path, redis_url: str) -> tuple[Path, dict[str, int]]:
    ports = {role: free_port() for role in ROLES}
    path = tmp_path / "active-call.toml"
    path.write_text(
        f'addr = "127.0.0.1"\nudp_port = {free_port()}\nhttp_addr = "127.0.0.1:{ports["api"]}"\n'
        f'[redis]\nurl = "{redis_url}"\nprefix = "svc{os.getpid()}:"\n'
        f'[metrics]\naddr = "127.0.0.1"\n'
        + "".join(f"{r.replace('-', '_')}_port = {ports[r]}\n" for r in ROLES if r != "api")
    )
    return path, ports


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        result: dict[str, object] = json.loads(response.read())
        return result


def read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} not printed; got:\n" + "\n".join(lines))


@pytest.mark.timeout(120)
def test_up_starts_redis_and_six_services_then_stops_them(tmp_path: Path) -> None:
    redis_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: `up` starts redis-server
    config, ports = write_config(tmp_path, redis_url)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    up = subprocess.Popen(
        [str(BIN / "activecall"), "up", "--config", str(config), "--media-workers", "2", "--wait", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        lines = read_until(up, "registry `activecall workers`", timeout=90)
        printed = "\n".join(lines)
        assert "is unreachable: starting redis-server" in printed
        assert f"HTTP     http://127.0.0.1:{ports['api']}" in printed
        for role in ROLES:
            port = ports[role]
            assert f"http://127.0.0.1:{port}/metrics" in printed
            health = get_json(f"http://127.0.0.1:{port}/healthz")
            assert (health["status"], health["role"]) == ("ok", role)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                assert b"activecall_worker_heartbeats_total" in response.read()
        listing = subprocess.run(
            [str(BIN / "activecall"), "workers", "--config", str(config), "--json"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        workers = json.loads(listing.stdout)
        assert sorted(w["role"] for w in workers if w["live"]) == sorted([*ROLES, "media"])
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
    # Every child and the private Redis are gone.
    leftovers = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, text=True, check=False)
    assert leftovers.stdout == ""


def start_service(role: str, config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / f"activecall-{role}"), "--config", str(config), "--worker-id", f"{role}-t"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_healthy(port: int, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get_json(f"http://127.0.0.1:{port}/healthz")
        except OSError:
            assert time.monotonic() < deadline, "service never became healthy"
            time.sleep(0.1)


def registry(redis_url: str, prefix: str, role: str) -> dict[str, dict[str, object]]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return {k.decode(): json.loads(v) for k, v in client.hgetall(f"{prefix}workers:{role}").items()}
    finally:
        client.close()


@pytest.mark.parametrize("role", ROLES)
def test_each_service_drains_on_sigterm_and_logs_json(role: str, tmp_path: Path, redis_url: str) -> None:
    config, ports = write_config(tmp_path, redis_url)
    prefix = f"svc{os.getpid()}:"
    process = start_service(role, config)
    try:
        assert wait_healthy(ports[role])["role"] == role
        # The heartbeat starts once the service has started: the tts synthesises the phrases of the
        # playbooks first, which a busy machine may take well over ten seconds to do.
        deadline = time.monotonic() + 60
        while f"{role}-t" not in registry(redis_url, prefix, role):
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert process.stderr is not None
    lines = [json.loads(line) for line in process.stderr.read().splitlines() if line.startswith("{")]
    messages = [line["msg"] for line in lines if line.get("logger") == "activecall.service"]
    assert messages == ["service started", "draining", "service stopped"]
    assert all(line["service"] == role and line["worker"] == f"{role}-t" for line in lines)
    assert f"{role}-t" not in registry(redis_url, prefix, role)


def test_sigint_stops_at_once(tmp_path: Path, redis_url: str) -> None:
    config, ports = write_config(tmp_path, redis_url)
    process = start_service("media", config)
    try:
        wait_healthy(ports["media"])
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert process.stderr is not None
    assert '"msg": "draining"' not in process.stderr.read()


def test_a_bad_config_stops_the_service_with_the_key_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("udp_prot = 5060\n")
    result = subprocess.run(
        [str(BIN / "activecall-media"), "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "udp_prot: unknown key; did you mean udp_port?" in result.stderr
