"""The whole system started the way `make run` starts it, and a real phone (baresip) to call it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from activecall.testing.baresip import make_certificate
from activecall.testing.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class System:
    config: Path
    redis_url: str
    tls_port: int
    http_port: int
    certificate: Path  # certificate and key in one PEM, for the phone
    log: Path


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    root = tmp_path_factory.mktemp("system")
    cert, key, combined = make_certificate(root / "certs")
    ports = {name: free_port() for name in ("udp", "tls", "http", "redis")}
    redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
    config = root / "active-call.toml"
    config.write_text(
        f'addr = "127.0.0.1"\nudp_port = {ports["udp"]}\ntls_port = {ports["tls"]}\n'
        f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\nenable_srtp = true\nexternal_ip = "127.0.0.1"\n'
        f'rtp_start_port = 30000\nrtp_end_port = 34000\nhttp_addr = "127.0.0.1:{ports["http"]}"\n'
        f'[redis]\nurl = "{redis_url}"\n[playbooks]\ndirs = ["{REPO / "docs" / "examples"}"]\n'
        "[metrics]\n" + "".join(f"{r}_port = 0\n" for r in ("sip_edge", "media", "asr", "llm", "tts"))
    )
    log = root / "services.log"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ANTHROPIC_API_KEY")}
    up = subprocess.Popen(
        [str(Path(sys.executable).parent / "activecall"), "up", "--config", str(config), "--wait", "120"],
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True, cwd=REPO, env=env,
    )  # fmt: skip
    assert up.stdout is not None
    for line in up.stdout:
        if "registry" in line:
            break
    else:
        raise AssertionError(f"the system did not come up; see {log}")
    try:
        yield System(config, redis_url, ports["tls"], ports["http"], combined, log)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
