"""A highly available Redis on loopback for tests and benchmarks: a master, a replica and three
sentinels (Debian's ``redis-sentinel``) that watch it with a quorum of two.

The sentinels call the master down after ``down_after_ms`` without an answer and promote the replica
(https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/). The master and the
replica keep append-only files, so a killed one started again comes back with its data and joins as
a replica of whoever is master then.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from activecall.testing.redis_server import RedisServer, free_port

MASTER_NAME = "activecall"
QUORUM = 2


class SentinelCluster:
    def __init__(self, sentinels: int = 3, down_after_ms: int = 1000, failover_timeout_ms: int = 10_000):
        self.dir = Path(tempfile.mkdtemp(prefix="activecall-test-sentinel-"))
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers = [RedisServer(append_only=True), RedisServer(append_only=True)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def config(self) -> str:
        """The ``[redis]`` keys that point a system at this cluster."""
        quoted = ", ".join(f'"{a}"' for a in self.addresses)
        return f'sentinels = [{quoted}]\nsentinel_master = "{MASTER_NAME}"\n'

    def start(self, timeout: float = 20.0) -> SentinelCluster:
        binary = shutil.which("redis-sentinel")
        if binary is None:
            raise RuntimeError("redis-sentinel is not installed; run `make setup`")
        master, replica = self.servers
        master.start()
        replica.start(extra=["--replicaof", "127.0.0.1", str(master.port)])
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} {QUORUM}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.sentinels.append(
                subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sentinels did not see the master, its replica and each other")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        """Every sentinel knows the master, the replica in sync, and the other sentinels."""
        for port in self.sentinel_ports:
            try:
                with redis.Redis(port=port, socket_timeout=1) as client:
                    state = client.sentinel_master(MASTER_NAME)
            except (redis.ConnectionError, redis.ResponseError):
                return False
            if (
                int(state.get("num-slaves", 0)) < 1
                or int(state.get("num-other-sentinels", 0)) < len(self.sentinel_ports) - 1
            ):
                return False
        with redis.Redis(port=self.servers[0].port, socket_timeout=1) as client:
            info = client.info("replication")
        return bool(info.get("connected_slaves")) and info.get("slave0", {}).get("state") == "online"

    def master_port(self) -> int:
        with redis.Redis(port=self.sentinel_ports[0], socket_timeout=1) as client:
            _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def kill_master(self) -> RedisServer:
        """SIGKILL the master; the sentinels fail over to the replica."""
        master = self.server_on(self.master_port())
        master.kill()
        return master

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """The new master's port, once every sentinel names it and it takes writes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ports = set()
                for port in self.sentinel_ports:
                    with redis.Redis(port=port, socket_timeout=1) as client:
                        ports.add(int(client.sentinel_get_master_addr_by_name(MASTER_NAME)[1]))
                (new,) = ports if len(ports) == 1 else (old_port,)
                if new != old_port:
                    with redis.Redis(port=new, socket_timeout=1) as client:
                        if client.info("replication").get("role") == "master":
                            return new
            except (redis.ConnectionError, redis.ResponseError, TypeError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"no failover from port {old_port} within {timeout:.0f} s")

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
