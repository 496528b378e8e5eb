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
    ports = {role: free_port() for role in [*ROLES, "supervisor"]}
    path = tmp_path / "active-call.toml"
    path.write_text(
        f'addr = "127.0.0.1"\nudp_port = {free_port()}\nhttp_addr = "127.0.0.1:{ports["api"]}"\n'
        f'[redis]\nurl = "{redis_url}"\nprefix = "svc{os.getpid()}:"\n'
        f'[metrics]\naddr = "127.0.0.1"\n'
        + "".join(f"{r.replace('-', '_')}_port = {ports[r]}\n" for r in ports if r != "api")
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


def live_workers(config: Path, env: dict[str, str]) -> list[dict[str, object]]:
    listing = subprocess.run(
        [str(BIN / "activecall"), "workers", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return [w for w in json.loads(listing.stdout) if w["live"]]


def supervisor_restarts(port: int, role: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    prefix = f'activecall_supervisor_restarts_total{{role="{role}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


@pytest.mark.timeout(180)
def test_up_starts_redis_and_the_services_and_restarts_one_that_dies(tmp_path: Path) -> None:
    redis_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: `up` starts redis-server
    config, ports = write_config(tmp_path, redis_url)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    log = tmp_path / "up.log"  # the children log there too: a pipe nobody reads would stop them
    up = subprocess.Popen(
        [BIN / "activecall", "up", "--config", config, "--workers", "media=2,llm=2", "--wait", "60"],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env=env,
    )
    try:
        lines = read_until(up, "registry `activecall workers`", timeout=90)
        printed = "\n".join(lines)
        assert "is unreachable: starting redis-server" in printed
        assert f"HTTP     http://127.0.0.1:{ports['api']}" in printed
        assert f"supervisor                   http://127.0.0.1:{ports['supervisor']}/metrics" in printed
        for role in ROLES:
            port = ports[role]
            assert f"http://127.0.0.1:{port}/metrics" in printed
            health = get_json(f"http://127.0.0.1:{port}/healthz")
            assert (health["status"], health["role"]) == ("ok", role)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                assert b"activecall_worker_heartbeats_total" in response.read()
        before = {str(w["id"]): w for w in live_workers(config, env)}
        assert sorted(str(w["role"]) for w in before.values()) == sorted([*ROLES, "media", "llm"])
        assert supervisor_restarts(ports["supervisor"], "llm") == 0

        # One child dies: it is started again under its worker id; no other child is touched.
        llm_port = f":{ports['llm']}"
        (victim,) = [
            w for w in before.values() if w["role"] == "llm" and str(w["metrics"]).endswith(llm_port)
        ]
        os.kill(int(str(victim["pid"])), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            after = {str(w["id"]): w for w in live_workers(config, env)}
            if victim["id"] in after and after[str(victim["id"])]["pid"] != victim["pid"]:
                break
            assert time.monotonic() < deadline, f"{victim['id']} was not started again: {after}"
            time.sleep(0.2)
        assert up.poll() is None
        assert supervisor_restarts(ports["supervisor"], "llm") == 1
        unchanged = {i: w["pid"] for i, w in before.items() if i != victim["id"]}
        assert {i: after[i]["pid"] for i in unchanged} == unchanged

        # The private Redis dies too: it is started again from its append-only file.
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=2)
        client.set("survives", "yes")
        time.sleep(1.5)  # appendfsync everysec
        redis_pid = int(client.info("server")["process_id"])
        os.kill(redis_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.get("survives") == b"yes" and int(client.info("server")["process_id"]) != redis_pid:
                    break
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "redis-server was not started again with its data"
            time.sleep(0.2)
        client.close()
        assert up.poll() is None
    finally:
        up.send_signal(signal.SIGINT)
        status = up.wait(timeout=30)
    assert status == 0
    stderr = log.read_text()
    assert f"{victim['id']} exited with status -9; starting it again in" in stderr
    assert f"{victim['id']} started again" in stderr
    assert "redis-server started again from its append-only file" in stderr
    # Every child and the private Redis are gone.
    leftovers = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, text=True, check=False)
    assert leftovers.stdout == ""


def test_up_refuses_a_malformed_workers_option(tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    for option, message in [
        ("asr=two", "the count of asr is not a number: 'two'"),
        ("speech=2", "'speech=2' is not ROLE=COUNT"),
        ("sip-edge=2", "sip-edge listens on the configured ports"),
        ("llm=100", "between 0 and 64"),
    ]:
        result = subprocess.run(
            [str(BIN / "activecall"), "up", "--config", str(config), "--workers", option],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2 and message in result.stderr, (option, result.stderr)
        assert "redis-server" not in result.stdout


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


def test_the_media_worker_runs_at_the_configured_cpu_priority(tmp_path: Path, redis_url: str) -> None:
    config, ports = write_config(tmp_path, redis_url)
    with config.open("a") as toml:
        toml.write("[media]\nnice = 7\n")  # a rise needs no privilege, so the test runs anywhere
    process = start_service("media", config)
    try:
        assert wait_healthy(ports["media"])["role"] == "media"
        deadline = time.monotonic() + 30
        while "media-t" not in registry(redis_url, f"svc{os.getpid()}:", "media"):  # started
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.1)
        stat = Path(f"/proc/{process.pid}/stat").read_text()
        assert int(stat.rsplit(")", 1)[1].split()[16]) == 7  # field 19 of proc(5): nice
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
