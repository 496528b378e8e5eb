"""SIP edge benchmark: the highest call rate held with no failed call, on loopback.

The edge runs as its own process (``python -m activecall.sip_edge``, uvloop) with a stand-in media
worker in another (``python -m activecall.testing.media_responder``), so every call opens, updates and
closes a leg over the bus. SIPp places calls (INVITE, 200, ACK, a short hold, BYE) at rising rates,
each held for ``--seconds``; the run stops at the first rate with a failed call, or when the time
budget is spent. Printed per rate: calls, failures, SIPp retransmissions, the edge's CPU per call
(user, system and their sum: a figure that other load on the machine moves far less than the held
rate), SIPp's INVITE-to-200 time and the edge's resident memory as the rate ends; at the end, the
held rate with the edge's CPU per call there.
Run with ``make bench-sip``; REDIS_URL selects a Redis server, otherwise a private redis-server is
started. ``--profile-edge FILE`` runs the edge under cProfile and writes its stats to FILE at the end
(the CPU figures then include the profiler's cost: compare profiles with profiles only).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from activecall.testing.redis_server import RedisServer, free_port
from activecall.testing.sipp import Sipp

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "tests" / "sip_edge" / "scenarios" / "uac_call.xml"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_RATES = (10, 25, 50, 100, 150, 200, 300, 400, 500)


@dataclass
class Step:
    rate: int
    calls: int
    failed: int
    retransmissions: int
    user_ms_per_call: float
    sys_ms_per_call: float
    setup_ms: str
    rss_mb: float
    ok: bool

    @property
    def cpu_ms_per_call(self) -> float:
        return self.user_ms_per_call + self.sys_ms_per_call


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1000
    return 0.0


def sipp_duration_ms(text: str) -> str:
    """SIPp's HH:MM:SS:microseconds as milliseconds."""
    parts = text.split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return "?"
    hours, minutes, seconds, micros = (int(p) for p in parts)
    return f"{(hours * 3600 + minutes * 60 + seconds) * 1000 + micros / 1000:.1f}"


def wait_for_sip(port: int, timeout: float = 20.0) -> None:
    """Send OPTIONS until the edge answers."""
    request = (
        f"OPTIONS sip:edge@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbench\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag=b\r\nTo: <sip:edge@127.0.0.1>\r\n"
        "Call-ID: bench-ready\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(0.2)
        while time.monotonic() < deadline:
            probe.sendto(
                request.replace(b"127.0.0.1:9", f"127.0.0.1:{probe.getsockname()[1]}".encode()),
                ("127.0.0.1", port),
            )
            try:
                if probe.recv(4096).startswith(b"SIP/2.0 200"):
                    return
            except TimeoutError:
                continue
    raise RuntimeError("the edge did not answer OPTIONS")


def write_config(folder: Path, redis_url: str, prefix: str, sip_port: int) -> Path:
    path = folder / "active-call.toml"
    path.write_text(
        f'addr = "127.0.0.1"\nudp_port = {sip_port}\nexternal_ip = "127.0.0.1"\n'
        f'[redis]\nurl = "{redis_url}"\nprefix = "{prefix}"\n'
        '[metrics]\naddr = "127.0.0.1"\n'
    )
    return path


def run_step(port: int, folder: Path, rate: int, seconds: float, hold_ms: int, edge_pid: int) -> Step:
    calls = int(rate * seconds)
    sipp = Sipp(
        SCENARIO,
        folder / f"rate-{rate}",
        remote=f"127.0.0.1:{port}",
        calls=calls,
        rate=rate,
        pause_ms=hold_ms,
        max_concurrent=rate * 10,
        timeout_s=seconds + 30,
        trace_messages=False,
        extra=["-s", "+15550001111", "-max_recv_loops", "10000", "-max_sched_loops", "10000"],
    )
    user_before, sys_before = cpu_seconds(edge_pid)
    result = sipp.run()
    user_after, sys_after = cpu_seconds(edge_pid)
    done = result.counter("SuccessfulCall(C)") + result.counter("FailedCall(C)")
    return Step(
        rate=rate,
        calls=done,
        failed=result.counter("FailedCall(C)"),
        retransmissions=result.counter("Retransmissions(C)"),
        user_ms_per_call=1000 * (user_after - user_before) / max(done, 1),
        sys_ms_per_call=1000 * (sys_after - sys_before) / max(done, 1),
        setup_ms=sipp_duration_ms(result.stats.get("ResponseTime1(C)", "")),
        rss_mb=rss_mb(edge_pid),
        ok=result.ok and result.counter("FailedCall(C)") == 0 and done == calls,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)), help="calls per second, rising")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each rate is held")
    parser.add_argument("--hold-ms", type=int, default=1000, help="time between ACK and BYE")
    parser.add_argument(
        "--budget", type=float, default=420.0, help="stop starting new rates after this many s"
    )
    parser.add_argument("--profile-edge", type=Path, help="run the edge under cProfile, stats to this file")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    started = time.monotonic()
    redis = None if os.environ.get("REDIS_URL") else RedisServer().start()
    url = os.environ.get("REDIS_URL") or (redis.url if redis else "")
    prefix = f"bench{os.getpid()}:"
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-sip-") as tmp:
        folder = Path(tmp)
        port = free_port(socket.SOCK_DGRAM)
        config = write_config(folder, url, prefix, port)
        env = {**os.environ, "ACTIVECALL_LOG_LEVEL": "WARNING"}
        env.pop("REDIS_URL", None)
        try:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "activecall.testing.media_responder", "--redis-url", url]
                    + ["--prefix", prefix, "--worker-id", "media-bench", "--session-stand-ins"],
                    env=env,
                )
            )
            profiler = ["-m", "cProfile", "-o", str(args.profile_edge)] if args.profile_edge else []
            edge = subprocess.Popen(
                [sys.executable, *profiler, "-m", "activecall.sip_edge", "--config", str(config)]
                + ["--worker-id", "edge-bench", "--metrics-port", "0"],
                env=env,
            )
            processes.append(edge)
            wait_for_sip(port)
            time.sleep(1.0)  # the media worker's first heartbeat
            print(f"sip-edge benchmark: {args.seconds:.0f} s per rate, {args.hold_ms} ms calls, redis {url}")
            heads = [
                "calls/s",
                "calls",
                "failed",
                "retrans",
                "edge user ms/call",
                "edge sys ms/call",
                "edge CPU ms/call",
                "INVITE->200 ms",
                "edge RSS MB",
            ]
            print("  ".join(h.rjust(len(h)) for h in heads))
            best: Step | None = None
            for rate in rates:
                if time.monotonic() - started > args.budget:
                    print(f"time budget of {args.budget:.0f} s spent")
                    break
                step = run_step(port, folder, rate, args.seconds, args.hold_ms, edge.pid)
                cells = [step.rate, step.calls, step.failed, step.retransmissions]
                cells += [f"{step.user_ms_per_call:.2f}", f"{step.sys_ms_per_call:.2f}"]
                cells += [f"{step.cpu_ms_per_call:.2f}", step.setup_ms, f"{step.rss_mb:.0f}"]
                print("  ".join(str(c).rjust(len(h)) for c, h in zip(cells, heads, strict=True)), flush=True)
                if not step.ok:
                    break
                best = step
            held = f"{best.rate} calls/s, edge CPU {best.cpu_ms_per_call:.2f} ms/call" if best else "none"
            print(f"highest rate held for {args.seconds:.0f} s with no failed call: {held}")
        finally:
            for process in reversed(processes):
                process.send_signal(signal.SIGINT)
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
            if redis is not None:
                redis.stop()


if __name__ == "__main__":
    main()
