"""Running SIPp (the ``sipp`` binary of the Debian package ``sip-tester``) from tests and benchmarks.

A :class:`Sipp` is one SIPp process: a scenario file, the remote address, the call count and rate,
``-key`` values for ``[name]`` placeholders, and a working folder that receives its logs (unexpected
messages, the message trace, the statistics CSV). :meth:`Sipp.run` waits for it; :meth:`Sipp.start`
leaves it running (a UAS waiting for our calls) until :meth:`Sipp.wait`. SIPp exits 0 when every call
succeeded, 1 when one failed.
"""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from activecall.testing.redis_server import free_port

SIPP_BINARY = "sipp"
EXIT_ALL_CALLS_OK = 0


def sipp_binary() -> str:
    binary = shutil.which(SIPP_BINARY)
    if binary is None:
        raise RuntimeError("sipp is not installed (Debian package sip-tester); run `make setup`")
    return binary


@dataclass
class SippResult:
    returncode: int
    stdout: str
    errors: str
    messages: str
    stats: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == EXIT_ALL_CALLS_OK

    def counter(self, name: str) -> int:
        """A cumulative counter of the statistics file, e.g. ``SuccessfulCall(C)`` or ``FailedCall(C)``."""
        value = self.stats.get(name, "0")
        return int(value) if value.isdigit() else 0

    def describe(self) -> str:
        return (
            f"sipp exited {self.returncode}\n--- output\n{self.stdout[-2000:]}"
            f"\n--- errors\n{self.errors[-4000:]}\n--- messages\n{self.messages[-6000:]}"
        )


@dataclass
class Sipp:
    """One SIPp run. ``remote`` is ``host:port``; empty for a UAS that only answers."""

    scenario: Path
    workdir: Path
    remote: str = ""
    local_ip: str = "127.0.0.1"
    local_port: int = 0
    media_port: int = 0
    calls: int = 1
    rate: float | None = None
    rate_period_ms: int = 1000
    max_concurrent: int | None = None
    timeout_s: float = 30.0
    keys: dict[str, str] = field(default_factory=dict)
    # Length of a <pause/> without its own duration (SIPp's -d), in milliseconds.
    pause_ms: int | None = None
    trace_messages: bool = True
    stats_period_s: int = 1
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.local_port:
            self.local_port = free_port(socket.SOCK_DGRAM)
        if not self.media_port:
            self.media_port = free_port(socket.SOCK_DGRAM)

    @property
    def errors_file(self) -> Path:
        return self.workdir / "errors.log"

    @property
    def messages_file(self) -> Path:
        return self.workdir / "messages.log"

    @property
    def stats_file(self) -> Path:
        return self.workdir / "stats.csv"

    def command(self) -> list[str]:
        args = [sipp_binary(), "-sf", str(self.scenario), "-i", self.local_ip, "-p", str(self.local_port)]
        args += ["-mi", self.local_ip, "-mp", str(self.media_port)]
        args += ["-m", str(self.calls), "-nostdin", "-timeout", f"{self.timeout_s}s", "-timeout_error"]
        args += ["-trace_err", "-error_file", str(self.errors_file)]
        args += ["-trace_stat", "-stf", str(self.stats_file), "-fd", str(self.stats_period_s)]
        if self.trace_messages:
            args += ["-trace_msg", "-message_file", str(self.messages_file)]
        if self.rate is not None:
            args += ["-r", f"{self.rate:g}", "-rp", f"{self.rate_period_ms}ms"]
        if self.max_concurrent is not None:
            args += ["-l", str(self.max_concurrent)]
        if self.pause_ms is not None:
            args += ["-d", str(self.pause_ms)]
        for name, value in self.keys.items():
            args += ["-key", name, value]
        args += self.extra
        if self.remote:
            args.append(self.remote)
        return args

    def start(self) -> Sipp:
        """Start in the background; returns once its SIP port is bound."""
        self.process = subprocess.Popen(
            self.command(), cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 5.0
        while not _udp_port_busy(self.local_ip, self.local_port):
            if self.process.poll() is not None:
                break  # already done (or failed: wait() tells)
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("sipp did not bind its port within 5 s")
            time.sleep(0.02)
        return self

    def wait(self, timeout: float | None = None) -> SippResult:
        assert self.process is not None, "start() first"
        try:
            stdout, _ = self.process.communicate(timeout=timeout or self.timeout_s + 10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, _ = self.process.communicate()
        return self._result(self.process.returncode, stdout or "")

    def run(self) -> SippResult:
        """Run to the end (every call done, or the timeout)."""
        return self.start().wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.communicate()

    def _result(self, returncode: int, stdout: str) -> SippResult:
        return SippResult(
            returncode,
            stdout,
            _read(self.errors_file),
            _read(self.messages_file),
            read_last_stats(self.stats_file),
        )


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def read_last_stats(path: Path) -> dict[str, str]:
    """The last row of a SIPp statistics CSV (``;``-separated, header first)."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def _udp_port_busy(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False
