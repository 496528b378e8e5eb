"""A private ``redis-server`` on a free loopback port, for tests and benchmarks.

``REDIS_URL`` in the environment wins: then the tests use that server (and a database of their own
choosing) instead of starting one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """Start with :meth:`start`, stop with :meth:`stop` (or SIGKILL with :meth:`kill`).

    With ``append_only`` it keeps an append-only file in its directory, as compose and ``activecall
    up`` run Redis, so :meth:`start` after :meth:`kill` brings back everything it had acknowledged."""

    def __init__(self, port: int | None = None, append_only: bool = False) -> None:
        self.port = port or free_port()
        self.append_only = append_only
        self.extra: list[str] = []
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="activecall-test-redis-"))

    def start(self, timeout: float = 10.0, extra: list[str] | None = None) -> RedisServer:
        """Start (again, after :meth:`kill`, on the same port and directory); ``extra`` arguments are
        kept for a start after a kill."""
        if extra is not None:
            self.extra = extra
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run `make setup`")
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "yes" if self.append_only else "no",
                "--dir",
                str(self.dir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port)
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    time.sleep(0.02)
        finally:
            client.close()
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def external_redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None
