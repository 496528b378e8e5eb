"""``activecall up`` (and ``make run``): the whole system on one machine.

Starts ``redis-server`` when the configured Redis is unreachable on a loopback address, then the six
services as child processes (``--workers asr=2,media=2`` starts several of a role), waits until each
one has a live heartbeat, prints where SIP, HTTP and metrics listen, and stops everything on Ctrl-C
(SIGINT to every child, then SIGKILL after a grace period).

It is a supervisor: a child that dies once the system is up is started again under the same worker
id, after a back-off that doubles with each quick death (1 s up to 30 s; a child that ran for a
minute starts again at 1 s), with a log line and ``activecall_supervisor_restarts_total``. The other
children and their calls are not touched: the restarted worker (or a sibling of its role) takes the
dead one's sessions over from Redis. A child that exits before the system is first up is a set-up
error (a bad config, a port in use): everything stops and the error is shown.

The Redis it starts keeps an append-only file (as compose runs it) and is started again the same way
when it dies, from that file: the calls' state survives.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import redis
from prometheus_client import Counter, Gauge, start_http_server

from activecall.config import Config, RedisSettings
from activecall.contract import Role
from activecall.redis_clients import sync_client
from activecall.registry import ROLES, WorkerInfo

SERVICE_MODULES: dict[str, str] = {
    Role.SIP_EDGE: "activecall.sip_edge",
    Role.MEDIA: "activecall.media",
    Role.ASR: "activecall.asr",
    Role.LLM: "activecall.llm",
    Role.TTS: "activecall.tts",
    Role.API: "activecall.api",
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
STOP_GRACE_S = 10.0
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0  # a child that ran this long restarts after the first delay again
SUPERVISE_TICK_S = 0.2

RESTARTS = Counter(
    "activecall_supervisor_restarts_total",
    "Children of activecall up started again after they died",
    ["role"],
)
CHILDREN_UP = Gauge(
    "activecall_supervisor_children_running", "Children of activecall up that are running", ["role"]
)


class WorkersError(ValueError):
    pass


def parse_workers(text: str) -> dict[str, int]:
    """``asr=2,llm=2,media=2``: how many children of each role (the others run one)."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        role, sep, number = item.partition("=")
        role = role.strip()
        if not sep or role not in SERVICE_MODULES:
            raise WorkersError(f"--workers: {item!r} is not ROLE=COUNT with ROLE one of {', '.join(ROLES)}")
        try:
            count = int(number)
        except ValueError:
            raise WorkersError(f"--workers: the count of {role} is not a number: {number!r}") from None
        if not 0 <= count <= 64:
            raise WorkersError(f"--workers: the count of {role} must be between 0 and 64, not {count}")
        if role in (Role.SIP_EDGE, Role.API) and count != 1:
            raise WorkersError(f"--workers: {role} listens on the configured ports; it runs once per host")
        counts[role] = count
    return counts


def restart_delay(failures: int, rand: random.Random | None = None) -> float:
    """The wait before the ``failures``-th quick restart in a row (1-based): doubling, capped, with up to
    20 % jitter so that children that died together do not start together."""
    base = min(RESTART_MAX_S, RESTART_FIRST_S * 2.0 ** max(0, failures - 1))
    jitter = rand.random() if rand is not None else random.random()
    return base * (0.8 + 0.2 * jitter)


@dataclass
class Restarts:
    """When a process that died is started again: after :func:`restart_delay` of its quick deaths."""

    name: str
    started: float = 0.0
    failures: int = 0  # deaths in a row, each within HEALTHY_AFTER_S of its start
    due: float | None = None  # when to start it again, while it is dead

    def died(self, now: float, status: int) -> None:
        self.failures = 1 if now - self.started >= HEALTHY_AFTER_S else self.failures + 1
        delay = restart_delay(self.failures)
        self.due = now + delay
        print(f"{self.name} exited with status {status}; starting it again in {delay:.1f} s", file=sys.stderr)
        sys.stderr.flush()

    def start_now(self, now: float) -> bool:
        """True (once) when its time to start again has come."""
        if self.due is None or now < self.due:
            return False
        self.due, self.started = None, now
        return True


@dataclass
class Child:
    role: str
    worker_id: str
    metrics_port: int | None
    process: subprocess.Popen[bytes]
    restarts: Restarts


def redis_reachable(settings: RedisSettings, timeout: float = 1.0) -> bool:
    client = sync_client(settings, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def start_redis_server(url: str, workdir: Path) -> subprocess.Popen[bytes]:
    """Start a private ``redis-server`` on the host and port of ``url`` (loopback only)."""
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if host not in LOOPBACK:
        raise RuntimeError(f"Redis at {url} is unreachable and is not on this machine; start it first")
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make setup installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            host,
            "--port",
            str(port),
            # As compose runs it: an append-only file, so a restarted server has every call's state.
            "--appendonly",
            "yes",
            "--save",
            "60 1000",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        process_group=0,  # Ctrl-C reaches the launcher only; it stops Redis after the services
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if redis_reachable(RedisSettings(url=url), 0.2):
            return process
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {process.returncode}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not answer within 10 s")


class Launcher:
    def __init__(
        self,
        config: Config,
        config_path: str | None,
        workers: dict[str, int] | None = None,
        wait_s: float = 30.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.workers = workers or {}
        self.wait_s = wait_s
        self.env = {**os.environ, **(extra_env or {}), "REDIS_URL": config.redis.url}
        self.children: list[Child] = []
        self.redis_process: subprocess.Popen[bytes] | None = None
        self.redis_dir: Path | None = None
        self.redis_restarts = Restarts("redis-server")
        self.metrics_port: int | None = None

    def serve_metrics(self) -> None:
        """The supervisor's own metrics (restarts, children running); port 0 takes any free port, a
        negative one serves none."""
        port = self.config.metrics.supervisor_port
        if port < 0:
            return
        server, _ = start_http_server(port, self.config.metrics.addr)
        self.metrics_port = server.server_port

    def _command(self, role: str, worker_id: str, metrics_port: int | None) -> list[str]:
        cmd = [sys.executable, "-m", SERVICE_MODULES[role], "--worker-id", worker_id]
        if self.config_path:
            cmd += ["--config", self.config_path]
        if metrics_port is not None:
            cmd += ["--metrics-port", str(metrics_port)]
        return cmd

    def plan(self) -> list[tuple[str, str, int | None]]:
        """(role, worker id, metrics port) of every child; a role's second and later children take any
        free metrics port."""
        host = os.uname().nodename
        plan: list[tuple[str, str, int | None]] = []
        for role in ROLES:
            for i in range(self.workers.get(role, 1)):
                port = None if i == 0 else 0
                plan.append((role, f"{role}-{host}-{i + 1}", port))
        return plan

    def start(self) -> None:
        if self.config.redis.sentinels:
            if not redis_reachable(self.config.redis):
                raise RuntimeError(
                    f"no Redis master {self.config.redis.sentinel_master!r} through the sentinels "
                    f"{', '.join(self.config.redis.sentinels)}"
                )
        elif not redis_reachable(self.config.redis):
            workdir = self.redis_dir = Path(tempfile.mkdtemp(prefix="activecall-redis-"))
            print(f"Redis at {self.config.redis.url} is unreachable: starting redis-server", flush=True)
            self.redis_process = start_redis_server(self.config.redis.url, workdir)
            self.redis_restarts.started = time.monotonic()
        for role, worker_id, port in self.plan():
            process = self._spawn(role, worker_id, port)
            self.children.append(Child(role, worker_id, port, process, Restarts(worker_id, time.monotonic())))
        self._count_running()

    def _spawn(self, role: str, worker_id: str, port: int | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._command(role, worker_id, port), env=self.env, process_group=0)

    def _count_running(self) -> None:
        for role in ROLES:
            running = [c for c in self.children if c.role == role and c.process.poll() is None]
            CHILDREN_UP.labels(role).set(len(running))

    def supervise(self, now: float) -> None:
        """One look at the children: schedule the restart of one that died, start one whose time came."""
        self._supervise_redis(now)
        for child in self.children:
            if child.restarts.start_now(now):
                child.process = self._spawn(child.role, child.worker_id, child.metrics_port)
                RESTARTS.labels(child.role).inc()
                started = f"{child.worker_id} started again (pid {child.process.pid})"
                print(started, file=sys.stderr, flush=True)
            elif child.restarts.due is None and (status := child.process.poll()) is not None:
                child.restarts.died(now, status)
        self._count_running()

    def _supervise_redis(self, now: float) -> None:
        """The Redis this launcher started, started again from its append-only file if it died."""
        if self.redis_process is None or self.redis_dir is None:
            return
        if self.redis_restarts.start_now(now):
            try:
                self.redis_process = start_redis_server(self.config.redis.url, self.redis_dir)
            except RuntimeError as exc:
                self.redis_restarts.died(now, -1)
                print(f"redis-server not started again: {exc}", file=sys.stderr, flush=True)
                return
            RESTARTS.labels("redis").inc()
            print("redis-server started again from its append-only file", file=sys.stderr, flush=True)
        elif self.redis_restarts.due is None and (status := self.redis_process.poll()) is not None:
            self.redis_restarts.died(now, status)

    def wait_for_heartbeats(self) -> list[WorkerInfo]:
        """Poll the registry until every child has a live heartbeat; raise if one exits or time runs out."""
        from activecall.bus import Keys

        client = sync_client(self.config.redis)
        keys = Keys(self.config.redis.prefix)
        wanted = {c.worker_id for c in self.children}
        deadline = time.monotonic() + self.wait_s
        try:
            while True:
                for child in self.children:
                    if child.process.poll() is not None:
                        raise RuntimeError(f"{child.worker_id} exited with status {child.process.returncode}")
                seen: dict[str, WorkerInfo] = {}
                for role in ROLES:
                    for raw in client.hvals(keys.workers(role)):
                        info = WorkerInfo.from_json(raw)
                        if info.id in wanted and info.is_live(self.config.redis.heartbeat_ttl):
                            seen[info.id] = info
                if set(seen) == wanted:
                    return sorted(seen.values(), key=lambda w: (ROLES.index(w.role), w.id))
                if time.monotonic() > deadline:
                    missing = ", ".join(sorted(wanted - set(seen)))
                    raise RuntimeError(f"no heartbeat within {self.wait_s:.0f} s from: {missing}")
                time.sleep(0.2)
        finally:
            client.close()

    def describe(self, workers: list[WorkerInfo]) -> str:
        config = self.config
        lines = ["active-call is up:"]
        sip = [f"udp {config.addr}:{config.udp_port}"]
        if config.tcp_port:
            sip.append(f"tcp {config.addr}:{config.tcp_port}")
        if config.tls_port:
            sip.append(f"tls {config.addr}:{config.tls_port}")
        lines.append(f"  SIP      {', '.join(sip)}")
        lines.append(f"  HTTP     http://{config.http_addr}  (POST /call, GET /calls, /docs)")
        lines.append(f"  Redis    {config.redis.url}")
        for w in workers:
            lines.append(
                f"  metrics  {w.role:<8} {w.id:<28} http://{config.metrics.addr}:{w.metrics_port}/metrics"
            )
        if self.metrics_port is not None:
            lines.append(
                f"  metrics  {'up':<8} {'supervisor':<28} http://{config.metrics.addr}:{self.metrics_port}/metrics"
            )
        lines.append("  registry `activecall workers` lists the live heartbeats; Ctrl-C stops everything.")
        return "\n".join(lines)

    def stop(self) -> None:
        for child in self.children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        if self.redis_process is not None:
            self.redis_process.terminate()
            self.redis_process.wait(timeout=10)

    def run(self) -> int:
        """Start everything, print the addresses, and supervise the children until Ctrl-C."""
        interrupted = False

        def on_signal(signum: int, frame: object) -> None:
            nonlocal interrupted
            interrupted = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        status = 0
        try:
            self.serve_metrics()
            self.start()
            print(self.describe(self.wait_for_heartbeats()), flush=True)
            while not interrupted:
                self.supervise(time.monotonic())
                time.sleep(SUPERVISE_TICK_S)
        except (RuntimeError, OSError) as exc:
            print(f"activecall up: {exc}", file=sys.stderr)
            status = 1
        finally:
            print("stopping...", flush=True)
            self.stop()
        return status
