"""The whole system started the way ``make run`` starts it (``activecall up``), for end-to-end tests.

A private Redis on a free port, SIP over UDP and TLS (a self-signed certificate made here), SRTP on,
the example playbooks, every metrics port chosen by the OS. ``extra_config`` is appended to the
generated TOML; ``env`` adds environment variables (``ANTHROPIC_API_KEY``, ``ACTIVECALL_...``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from activecall.testing.baresip import make_certificate
from activecall.testing.redis_server import free_port

REPO = Path(__file__).resolve().parents[4]
EXAMPLE_PLAYBOOKS = REPO / "docs" / "examples"


@dataclass
class System:
    config: Path
    redis_url: str
    udp_port: int
    tls_port: int
    http_port: int
    certificate: Path  # certificate and key in one PEM, for a phone
    log: Path
    banner: str  # what `activecall up` printed once every heartbeat was live

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def system_config(
    root: Path,
    ports: dict[str, int],
    playbook_dirs: list[Path],
    extra_config: str = "",
    redis_config: str = "",
) -> tuple[Path, Path]:
    """The config file and the PEM (certificate and key) a phone trusts; ``redis_config`` goes into
    the ``[redis]`` table (sentinels)."""
    cert, key, combined = make_certificate(root / "certs")
    redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
    dirs = ", ".join(f'"{d}"' for d in playbook_dirs)
    config = root / "active-call.toml"
    config.write_text(
        f'addr = "127.0.0.1"\nudp_port = {ports["udp"]}\ntls_port = {ports["tls"]}\n'
        f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\nenable_srtp = true\nexternal_ip = "127.0.0.1"\n'
        f'rtp_start_port = 30000\nrtp_end_port = 34000\nhttp_addr = "127.0.0.1:{ports["http"]}"\n'
        + extra_config
        + f'\n[redis]\nurl = "{redis_url}"\n{redis_config}[playbooks]\ndirs = [{dirs}]\n'
        "[metrics]\n"
        + "".join(f"{r}_port = 0\n" for r in ("sip_edge", "media", "asr", "llm", "tts", "supervisor"))
    )  # fmt: skip
    return config, combined


@contextmanager
def running_system(
    root: Path,
    *,
    media_workers: int = 1,
    workers: dict[str, int] | None = None,
    playbook_dirs: list[Path] | None = None,
    extra_config: str = "",
    env: dict[str, str] | None = None,
    wait_s: float = 120.0,
    redis_config: str = "",
) -> Iterator[System]:
    """Run ``activecall up`` until the block ends, then stop it with Ctrl-C (SIGINT) as a user would.
    ``workers`` (role: count) is ``--workers``; ``media_workers`` is the media count when it has none;
    ``redis_config`` goes into the ``[redis]`` table (with sentinels, ``up`` starts no Redis)."""
    root.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("udp", "tls", "http", "redis")}
    config, certificate = system_config(
        root, ports, playbook_dirs or [EXAMPLE_PLAYBOOKS], extra_config, redis_config
    )
    log = root / "services.log"
    child_env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ANTHROPIC_API_KEY")}
    child_env.update(env or {})
    command = [
        str(Path(sys.executable).parent / "activecall"), "up", "--config", str(config),
        "--media-workers", str(media_workers), "--wait", str(wait_s),
    ]  # fmt: skip
    if workers:
        command += ["--workers", ",".join(f"{role}={count}" for role, count in workers.items())]
    up = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, cwd=REPO, env=child_env
    )
    assert up.stdout is not None
    banner: list[str] = []
    for line in up.stdout:
        banner.append(line)
        if "registry" in line:
            break
    else:
        up.wait(timeout=30)
        raise AssertionError(f"the system did not come up; see {log}:\n{log.read_text()[-4000:]}")
    try:
        yield System(
            config, f"redis://127.0.0.1:{ports['redis']}/0", ports["udp"], ports["tls"], ports["http"],
            certificate, log, "".join(banner),
        )  # fmt: skip
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
