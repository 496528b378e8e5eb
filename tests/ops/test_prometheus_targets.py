"""A real Prometheus finds every process of `make run` (two media workers) through /sd/targets and, after one
call with a turn, holds samples of the call counter and the turn-latency histogram."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from activecall.audio import resample, write_wav
from activecall.registry import ROLES
from activecall.testing.baresip import BaresipPhone
from activecall.testing.redis_server import free_port
from activecall.testing.system import System, running_system
from activecall.tts.engines import create_tts_engine

REPO = Path(__file__).resolve().parents[2]
DEPLOYED_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS = "/usr/bin/prometheus"
MEDIA_WORKERS = 2
CALLER_SENTENCE = "What are your opening hours?"
GREETING_ROOM_S = 5  # silence before the caller speaks, so the greeting plays out first

T = TypeVar("T")

pytestmark = pytest.mark.slow


def prometheus_config(api: str) -> dict[str, Any]:
    """The deployed scrape config, its discovery pointed at this test's api and scraping every second."""
    config: dict[str, Any] = yaml.safe_load(DEPLOYED_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    (job,) = config["scrape_configs"]
    (discovery,) = job["http_sd_configs"]
    discovery.update(url=f"{api}/sd/targets", refresh_interval="1s")
    return config


@contextmanager
def running_prometheus(folder: Path, api: str, lifetime_s: float = 150.0) -> Iterator[str]:
    """``/usr/bin/prometheus`` on a free loopback port until the block ends; yields its base URL.

    ``timeout(1)`` bounds its life even if pytest dies before the ``finally``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(api)))
    address = f"127.0.0.1:{free_port()}"
    command = [
        shutil.which("timeout") or "timeout", "-s", "KILL", str(int(lifetime_s)), PROMETHEUS,
        f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address={address}", "--log.level=warn",
    ]  # fmt: skip
    log = folder / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        base = f"http://{address}"
        wait_for(lambda: _ready(base), 20, f"prometheus did not start; see {log}")
        yield base
    finally:
        process.terminate()  # timeout(1) passes SIGTERM on to prometheus; SIGKILL would orphan it
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_for(probe: Callable[[], T | None], timeout_s: float, failure: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(failure)
        time.sleep(0.5)


def prometheus_api(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]


def up_targets(base: str) -> list[dict[str, Any]] | None:
    """The active targets, once there is one per role and media worker and every one is up."""
    targets: list[dict[str, Any]] = prometheus_api(base, "targets", state="active")["activeTargets"]
    roles = [t["labels"].get("role") for t in targets]
    enough = set(roles) == set(ROLES) and roles.count("media") == MEDIA_WORKERS
    return targets if enough and all(t["health"] == "up" for t in targets) else None


def sample_value(base: str, expr: str) -> float | None:
    """The value of an instant query summed over its series, when it is above zero."""
    result = prometheus_api(base, "query", query=f"sum({expr})")["result"]
    value = float(result[0]["value"][1]) if result else 0.0
    return value if value > 0 else None


def caller_wav(path: Path) -> Path:
    """Silence while the greeting plays, the caller's question, then silence for the answer."""
    tts = create_tts_engine("piper")
    sentence = resample(b"".join(tts.synthesize(CALLER_SENTENCE)), tts.sample_rate, 8000)
    write_wav(path, bytes(8000 * 2 * GREETING_ROOM_S) + sentence + bytes(8000 * 2 * 30), 8000)
    return path


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("system"), media_workers=MEDIA_WORKERS) as running:
        yield running


def test_prometheus_scrapes_every_process_and_sees_a_call(system: System, tmp_path: Path) -> None:
    with running_prometheus(tmp_path / "prometheus", system.api) as prometheus:
        targets = wait_for(lambda: up_targets(prometheus), 30, f"not every target is up: {system.log}")
        media = {t["labels"]["instance"] for t in targets if t["labels"]["role"] == "media"}
        workers = {t["labels"]["worker"] for t in targets if t["labels"]["role"] == "media"}
        assert len(media) == len(workers) == MEDIA_WORKERS

        phone = BaresipPhone(
            tmp_path / "phone", caller_wav(tmp_path / "caller.wav"), "caller", certificate=system.certificate
        ).start()
        try:
            assert phone.dial(f"sip:agent@127.0.0.1:{system.tls_port};transport=tls")["ok"]
            phone.wait_event("CALL_ESTABLISHED", 30)
            turns = wait_for(
                lambda: sample_value(prometheus, "activecall_turn_latency_seconds_count"),
                60,
                "no turn-latency sample after the caller's question",
            )
            latency = sample_value(prometheus, "activecall_turn_latency_seconds_sum") or 0.0
            phone.hangup()
            phone.wait_event("CALL_CLOSED", 10)
        finally:
            phone.stop()
        calls = wait_for(
            lambda: sample_value(prometheus, "activecall_calls_total"), 30, "no activecall_calls_total sample"
        )
    roles = ", ".join(sorted(t["labels"]["role"] for t in targets))
    print(
        f"\nprometheus: {len(targets)} targets up ({roles}),"
        f" {len(media)} media instances; activecall_turn_latency_seconds_count {turns:g}"
        f" (sum {latency:.3f} s), activecall_calls_total {calls:g}"
    )
    assert turns >= 1 and calls >= 1
