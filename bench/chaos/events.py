"""The events of the chaos scenarios: which copy of a role to kill (the one serving the calls), killing
and restarting it, the rolling SIGTERM restart of every role, Redis killed or failed over, a child
of ``activecall up`` killed, and every core hogged."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field

from activecall.bus import as_str
from chaos.fleet import KEYS, Fleet
from chaos.supervised import SupervisedSystem

RESTART_AFTER_S = 3.0
RESTART_WAIT_S = 120.0


@dataclass
class EventLog:
    started: float  # monotonic
    lines: list[str] = field(default_factory=list)
    victim: str = ""  # the worker id killed, when the event kills one
    hog: subprocess.Popen[bytes] | None = None  # stress-ng, stopped once the calls are over

    def note(self, text: str) -> None:
        line = f"  event +{1000 * (time.monotonic() - self.started):6.0f} ms  {text}"
        self.lines.append(line)
        print(line, flush=True)


def holders(fleet: Fleet | SupervisedSystem, role: str, call_ids: list[str]) -> Counter[str]:
    """How many of ``call_ids`` each copy of ``role`` serves (lease holders; legs for media)."""
    counts: Counter[str] = Counter()
    with fleet.client() as client:
        if role == "media":
            for service in fleet.of_role(role):
                held = {as_str(c) for c in client.smembers(KEYS.media_legs(service.worker_id))}
                counts[service.worker_id] = len(held & set(call_ids))
        elif role == "sip-edge":
            for call_id in call_ids:
                edge = client.hget(KEYS.call(call_id), "edge")
                if edge is not None:
                    counts[as_str(edge)] += 1
        else:
            for call_id in call_ids:
                owner = client.get(KEYS.lease(role, call_id))
                if owner is not None:
                    counts[as_str(owner)] += 1
    return counts


def victim(fleet: Fleet | SupervisedSystem, role: str, call_ids: list[str]) -> str:
    """The running copy of ``role`` that serves the most of the calls (the first copy if none does)."""
    counts = holders(fleet, role, call_ids)
    running = [s.worker_id for s in fleet.of_role(role) if s.running]
    return max(running, key=lambda w: (counts[w], -running.index(w)))


def kill_and_restart(fleet: Fleet, worker_id: str, log: EventLog) -> None:
    """SIGKILL, then the same worker id (and ports) started again 3 s later, waited for until it beats."""
    fleet.kill(worker_id)
    log.note(f"SIGKILL {worker_id}")
    time.sleep(max(0.0, log.started + RESTART_AFTER_S - time.monotonic()))
    restart(fleet, worker_id, log)


def kill_and_restart_redis(fleet: Fleet, log: EventLog) -> None:
    """SIGKILL Redis, start it again from its append-only file 3 s later."""
    fleet.kill_redis()
    log.note("SIGKILL redis-server")
    time.sleep(max(0.0, log.started + RESTART_AFTER_S - time.monotonic()))
    fleet.start_redis()
    log.note("redis-server started again from its append-only file")


def fail_redis_over(fleet: Fleet, log: EventLog) -> None:
    """SIGKILL the Redis master; the sentinels promote the replica; the old master is started again
    3 s after the kill and rejoins as a replica."""
    assert fleet.cluster is not None
    old_port = fleet.cluster.master_port()
    killed = fleet.cluster.kill_master()
    log.note(f"SIGKILL the Redis master (port {old_port})")
    try:
        new_port = fleet.cluster.wait_failover(old_port)
        log.note(f"the sentinels promoted the replica (port {new_port})")
    except RuntimeError as exc:
        log.note(str(exc))
    time.sleep(max(0.0, log.started + RESTART_AFTER_S - time.monotonic()))
    killed.start()
    log.note("the old master started again (it rejoins as a replica)")


def crash_child(system: SupervisedSystem, role: str, call_ids: list[str], log: EventLog) -> str:
    """SIGKILL the child of ``role`` serving the most of the calls; ``activecall up`` starts it again.
    The child's worker id."""
    counts = holders(system, role, call_ids)
    target = victim(system, role, call_ids)
    log.note(f"{target} serves {counts[target]} of the {len(call_ids)} calls ({dict(counts)})")
    pid = system.kill(role, target)
    log.victim = target
    log.note(f"SIGKILL {target} (pid {pid})")
    if system.wait_restarted(role, target, pid, RESTART_WAIT_S):
        log.note(f"activecall up started {target} again; it beats")
    else:
        log.note(f"{target} was not started again within {RESTART_WAIT_S:.0f} s")
    return target


def hog_the_cpus(seconds: float, log: EventLog) -> subprocess.Popen[bytes]:
    """stress-ng on every core (at the services' priority) for ``seconds``."""
    hog = subprocess.Popen(
        ["stress-ng", "--cpu", str(os.cpu_count() or 1), "--timeout", f"{seconds:.0f}s", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log.note(f"stress-ng hogs all {os.cpu_count()} cores for {seconds:.0f} s")
    return hog


def restart(fleet: Fleet, worker_id: str, log: EventLog) -> None:
    """Start the copy again and wait (bounded) for its beat; a failure is noted, not raised."""
    since = time.time()
    try:
        fleet.launch(fleet.services[worker_id])
        log.note(f"restarted {worker_id}")
        if fleet.wait_live([worker_id], RESTART_WAIT_S, since):
            log.note(f"{worker_id} beats again")
        else:
            log.note(f"{worker_id} did not beat within {RESTART_WAIT_S:.0f} s")
    except RuntimeError as exc:
        log.note(f"{worker_id} not restarted: {exc}")


def rolling_restart(fleet: Fleet, roles: list[str], log: EventLog) -> None:
    """SIGTERM every copy of every role in turn; each is started again and beating before the next
    one stops, so at most one copy is missing at any time."""
    for role in roles:
        for service in fleet.of_role(role):
            fleet.signal(service.worker_id, signal.SIGTERM)
            log.note(f"SIGTERM {service.worker_id}")
            if not fleet.wait_exit(service.worker_id, fleet.drain_timeout_s + 15.0):
                fleet.kill(service.worker_id)
                log.note(f"{service.worker_id} still running after its drain timeout: SIGKILL")
            assert service.process is not None
            log.note(f"{service.worker_id} exited with status {service.process.returncode}")
            restart(fleet, service.worker_id, log)
