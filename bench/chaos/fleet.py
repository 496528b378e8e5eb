"""The system as separate processes the harness can kill one by one: a private Redis (with an
append-only file, as compose and ``activecall up`` run it; or a master, a replica and three
sentinels) and every service
started on its own (``python -m activecall.<role>``), with the config ``activecall up`` would get
(activecall.testing.system), so each copy is a process of its own with a worker id of its own.

Everything started here is stopped by :meth:`Fleet.stop` (SIGINT, then SIGKILL after a grace period),
which the harness runs on every exit, Ctrl-C and failures included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from activecall.bus import Keys
from activecall.config import RedisSettings
from activecall.launcher import SERVICE_MODULES
from activecall.redis_clients import sync_client
from activecall.registry import WorkerInfo
from activecall.testing.redis_server import RedisServer, free_port
from activecall.testing.sentinel import MASTER_NAME, SentinelCluster
from activecall.testing.system import system_config

HEARTBEAT_TTL_S = 5.0
START_WAIT_S = 120.0
STOP_GRACE_S = 10.0
KEYS = Keys()


def live_workers(client: redis.Redis, role: str) -> dict[str, WorkerInfo]:
    """The live entries of the registry for ``role``, by worker id."""
    infos = [WorkerInfo.from_json(raw) for raw in client.hvals(KEYS.workers(role))]
    return {w.id: w for w in infos if w.is_live(HEARTBEAT_TTL_S)}


@dataclass
class Service:
    role: str
    worker_id: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Fleet:
    """Redis and the services on loopback; ``copies`` per role (one edge: the callers dial its port)."""

    root: Path
    copies: dict[str, int]
    playbook_dirs: list[Path]
    extra_config: str = ""
    sentinel: bool = False  # Redis as a master, a replica and three sentinels instead of one server
    drain_timeout_s: float = 30.0
    services: dict[str, Service] = field(default_factory=dict)
    redis_server: RedisServer | None = None
    cluster: SentinelCluster | None = None
    stopping: bool = False  # set by stop(): a restart racing with it starts nothing
    _launching: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in ("udp", "tls", "http", "redis")}
        self.redis_settings = RedisSettings(url=f"redis://127.0.0.1:{self.ports['redis']}/0")
        redis_config = ""
        if self.sentinel:
            self.cluster = SentinelCluster()
            self.redis_settings.sentinels = self.cluster.addresses
            self.redis_settings.sentinel_master = MASTER_NAME
            redis_config = self.cluster.config()
        self.config, self.certificate = system_config(
            self.root, self.ports, self.playbook_dirs, self.extra_config, redis_config
        )
        self.env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ANTHROPIC_API_KEY")}

    @property
    def tls_port(self) -> int:
        return self.ports["tls"]

    def client(self) -> redis.Redis:
        """A client of the master (with sentinels: whichever server is master now)."""
        return sync_client(self.redis_settings, socket_timeout=10)

    def start(self) -> None:
        if self.cluster is not None:
            self.cluster.start()
        else:
            self.redis_server = RedisServer(self.ports["redis"], append_only=True).start()
        for role, count in self.copies.items():
            for index in range(1, count + 1):
                worker_id = f"{role}-chaos-{index}"
                service = Service(role, worker_id, self.root / f"{worker_id}.log")
                self.services[worker_id] = service
                self.launch(service)
        self.wait_live(list(self.services), START_WAIT_S)

    def launch(self, service: Service) -> None:
        command = [sys.executable, "-m", SERVICE_MODULES[service.role], "--config", str(self.config)]
        command += ["--worker-id", service.worker_id, "--metrics-port", "0"]
        command += ["--drain-timeout", str(self.drain_timeout_s)]
        with self._launching, service.log.open("ab") as log:
            if self.stopping:
                raise RuntimeError(f"not starting {service.worker_id}: the fleet is stopping")
            service.starts += 1
            # A session of its own: a Ctrl-C at the terminal reaches the harness only, which then
            # stops every service itself.
            service.process = subprocess.Popen(
                command, stdout=log, stderr=log, env=self.env, start_new_session=True
            )

    def kill_redis(self) -> None:
        assert self.redis_server is not None
        self.redis_server.kill()

    def start_redis(self) -> None:
        """Redis again on its port, from its append-only file."""
        assert self.redis_server is not None
        self.redis_server.start()

    def logs(self) -> list[Path]:
        return [service.log for service in self.services.values() if service.log.exists()]

    def of_role(self, role: str) -> list[Service]:
        return [s for s in self.services.values() if s.role == role]

    def signal(self, worker_id: str, signum: int) -> None:
        service = self.services[worker_id]
        if service.process is not None and service.running:
            service.process.send_signal(signum)

    def wait_exit(self, worker_id: str, timeout: float) -> bool:
        process = self.services[worker_id].process
        if process is None:
            return True
        try:
            process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self, worker_id: str) -> None:
        self.signal(worker_id, signal.SIGKILL)
        self.wait_exit(worker_id, 10.0)

    def restart(self, worker_id: str, wait_s: float = START_WAIT_S) -> bool:
        """Start the copy again under the same worker id (and ports); True once it beats."""
        service = self.services[worker_id]
        if service.running:
            raise RuntimeError(f"{worker_id} is still running")
        since = time.time()
        self.launch(service)
        return self.wait_live([worker_id], wait_s, since)

    def workers(self, role: str) -> dict[str, WorkerInfo]:
        """The live entries of the registry for ``role``."""
        with self.client() as client:
            return live_workers(client, role)

    def wait_live(self, worker_ids: list[str], timeout: float, since: float = 0.0) -> bool:
        """Wait until each of ``worker_ids`` has beaten after ``since`` (wall clock) from its process."""
        deadline = time.monotonic() + timeout
        wanted = set(worker_ids)
        while time.monotonic() < deadline:
            for worker_id in wanted:
                if not self.services[worker_id].running:
                    raise RuntimeError(f"{worker_id} exited; see {self.services[worker_id].log}")
            roles = {self.services[i].role for i in wanted}
            beating = [w for role in roles for w in self.workers(role).values()]
            seen = {w.id for w in beating if w.ts >= since and w.pid == self._pid(w.id)}
            if wanted <= seen:
                return True
            time.sleep(0.2)
        return False

    def _pid(self, worker_id: str) -> int:
        service = self.services.get(worker_id)
        return service.process.pid if service is not None and service.process is not None else -1

    def pids(self, role: str) -> list[int]:
        return [s.process.pid for s in self.of_role(role) if s.process is not None and s.running]

    def stop(self) -> None:
        with self._launching:
            self.stopping = True
        running = [s for s in self.services.values() if s.running]
        for service in running:
            assert service.process is not None
            service.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for service in running:
            assert service.process is not None
            try:
                service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
        if self.redis_server is not None:
            self.redis_server.stop()
        if self.cluster is not None:
            self.cluster.stop()
