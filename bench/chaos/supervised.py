"""The system as ``make run`` runs it: ``activecall up`` with several children per role
(``--workers``) and its own Redis, supervising them all. The ``child-crash`` scenario SIGKILLs one
child; the launcher starts it again under the same worker id, and nothing else is touched.

It offers what the scenarios use of a :class:`chaos.fleet.Fleet`: the edge's TLS port, a Redis
client, the live workers of a role and their process ids.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import redis

from activecall.registry import WorkerInfo
from activecall.testing.system import System, running_system
from chaos.fleet import live_workers


@dataclass(frozen=True)
class Child:
    worker_id: str
    running: bool = True


@dataclass
class SupervisedSystem:
    root: Path
    copies: dict[str, int]
    playbook_dirs: list[Path]
    extra_config: str = ""
    redis_config: str = ""  # keys of the [redis] table
    sentinel: bool = False
    system: System | None = None
    _stack: ExitStack = field(default_factory=ExitStack)

    def start(self) -> None:
        self.system = self._stack.enter_context(
            running_system(
                self.root,
                workers=self.copies,
                playbook_dirs=self.playbook_dirs,
                extra_config=self.extra_config,
                redis_config=self.redis_config,
            )
        )

    def stop(self) -> None:
        self._stack.close()

    @property
    def tls_port(self) -> int:
        assert self.system is not None
        return self.system.tls_port

    def logs(self) -> list[Path]:
        return [self.system.log] if self.system is not None else []

    def client(self) -> redis.Redis:
        assert self.system is not None
        return redis.Redis.from_url(self.system.redis_url, socket_timeout=10)

    def workers(self, role: str) -> dict[str, WorkerInfo]:
        with self.client() as client:
            return live_workers(client, role)

    def of_role(self, role: str) -> list[Child]:
        return [Child(worker_id) for worker_id in sorted(self.workers(role))]

    def pids(self, role: str) -> list[int]:
        return [w.pid for w in self.workers(role).values()]

    def kill(self, role: str, worker_id: str) -> int:
        """SIGKILL the child; its process id."""
        pid = self.workers(role)[worker_id].pid
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_restarted(self, role: str, worker_id: str, old_pid: int, timeout: float) -> bool:
        """Whether the launcher started the child again (a new process beating) within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.workers(role).get(worker_id)
            if info is not None and info.pid != old_pid:
                return True
            time.sleep(0.2)
        return False
