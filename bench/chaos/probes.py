"""What is left behind once every call of a scenario has ended, read from Redis, the media workers'
/metrics and /proc: calls that did not end everywhere, ports beyond the live workers' baseline, keys
of ended calls that never expire."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import redis

from activecall.bus import Keys, as_str
from activecall.contract import SESSION_ROLES
from activecall.messages import SessionStart, decode
from activecall.registry import WorkerInfo

KEYS = Keys()
LEGS_GAUGE = re.compile(r"^activecall_media_legs_active(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.MULTILINE)
LEFT_OVER_SUFFIXES = (":lease:", ":cursor:")  # deleted when a call ends, whatever their TTL


@dataclass(frozen=True)
class PortUse:
    bound: int  # UDP sockets of the media processes inside the RTP range
    blocks: int  # leased port blocks (ports:{host}:{index})

    def beyond(self, baseline: PortUse) -> int:
        return max(0, self.bound - baseline.bound) + max(0, self.blocks - baseline.blocks)


@dataclass
class Leftovers:
    zombies: dict[str, list[str]] = field(default_factory=dict)  # call id -> why it is not over
    legs_open: int = 0  # the live media workers' legs gauge, summed
    keys: dict[str, list[str]] = field(default_factory=dict)  # call id -> keys left behind

    @property
    def zombie_count(self) -> int:
        return max(len(self.zombies), self.legs_open)

    @property
    def key_count(self) -> int:
        return sum(len(v) for v in self.keys.values())


def legs_gauge(worker: WorkerInfo, timeout: float = 2.0) -> int:
    """``activecall_media_legs_active`` of one media worker, from its /metrics."""
    host = worker.metrics_host or "127.0.0.1"
    with urllib.request.urlopen(f"http://{host}:{worker.metrics_port}/metrics", timeout=timeout) as reply:
        text = reply.read().decode()
    return sum(int(float(v)) for v in LEGS_GAUGE.findall(text))


def bound_udp_ports(pids: list[int], first: int, last: int) -> int:
    """UDP sockets held by ``pids`` whose local port lies in ``first..last`` (from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            links = [fd.readlink() for fd in fd_dir.iterdir()]
        except OSError:
            continue
        inodes.update(str(link)[8:-1] for link in links if str(link).startswith("socket:["))
    count = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            port = int(cols[1].rsplit(":", 1)[1], 16)
            count += first <= port <= last and cols[9] in inodes
    return count


def port_use(client: redis.Redis, media_pids: list[int], first: int, last: int) -> PortUse:
    blocks = sum(1 for _ in client.scan_iter(match=f"{KEYS.prefix}ports:*", count=1000))
    return PortUse(bound_udp_ports(media_pids, first, last), blocks)


def session_entries(client: redis.Redis, call_ids: set[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for role in SESSION_ROLES:
        for entry_id, fields in client.xrange(KEYS.sessions(role)):
            try:
                message = decode(fields[b"m"])
            except Exception:  # not ours to judge here: the services count what they skip
                continue
            if isinstance(message, SessionStart) and message.call_id in call_ids:
                found.setdefault(message.call_id, []).append(f"sessions:{role} {as_str(entry_id)}")
    return found


def keys_left(client: redis.Redis, call_id: str) -> list[str]:
    """The call's keys that never expire, and its leases and cursors (deleted when a call ends)."""
    left = []
    for raw in client.scan_iter(match=f"{KEYS.call(call_id)}*", count=1000):
        key = as_str(raw)
        if client.ttl(key) == -1:
            left.append(f"{key} (no TTL)")
        elif any(s in key for s in LEFT_OVER_SUFFIXES):
            left.append(key)
    return left


def why_not_over(client: redis.Redis, call_id: str, held: dict[str, set[str]]) -> list[str]:
    reasons = []
    if client.sismember(KEYS.calls_active(), call_id):
        reasons.append("in calls:active")
    state = client.hget(KEYS.call(call_id), "state")
    if state is not None and as_str(state) != "ended":
        reasons.append(f"record {as_str(state)}")
    reasons += [f"leg on {worker}" for worker, calls in held.items() if call_id in calls]
    return reasons


def leftovers(client: redis.Redis, call_ids: list[str], media: dict[str, WorkerInfo]) -> Leftovers:
    """Zombies and keys of ``call_ids``, with ``media`` the live media workers."""
    held = {w: {as_str(c) for c in client.smembers(KEYS.media_legs(w))} for w in media}
    result = Leftovers()
    for worker in media.values():
        try:
            result.legs_open += legs_gauge(worker)
        except OSError:
            pass  # a worker that just died or restarted: its legs are judged from Redis
    entries = session_entries(client, set(call_ids))
    for call_id in call_ids:
        reasons = why_not_over(client, call_id, held)
        if reasons:
            result.zombies[call_id] = reasons
        keys = keys_left(client, call_id) + entries.get(call_id, [])
        if keys:
            result.keys[call_id] = keys
    return result
