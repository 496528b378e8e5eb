"""Session leases renewed from a thread of their own, apart from the worker's event loop.

A lease says "this worker is alive and serves the call". Renewed by the event loop, it also said
"this worker's event loop has run in the last ``lease_ttl``", and a loop stalls for seconds on a busy
host: engine calls that hold the GIL, a takeover that opens several recognizers, a CPU shared with
other work. Leases then lapsed while their holder lived, another worker took the calls, stalled in
turn, and the calls went back and forth, deaf all the while.

The :class:`LeaseKeeper` thread renews the held leases every third of the TTL on a connection of its
own, so a worker keeps its leases as long as its process runs and Redis answers, and a dead process
still loses them within the TTL. A worker whose loop is stuck for good must lose them too: the loop
ticks the keeper (:meth:`LeaseKeeper.tick`), and leases are renewed only while the last tick is
less than ``stall_limit`` old. A lease found taken by another worker is reported to the loop
(``on_lost``), which stops that session. A lease found lapsed with no other holder is taken again:
Redis was away for longer than the TTL (and came back from its append-only file with the key
expired, or a replica took over), or this thread could not run for that long on a busy host;
nobody else serves the session, and dropping it would only make a worker take it over. A worker
whose loop is stuck renews nothing, so another worker takes its sessions over once they lapse.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import redis

from activecall.bus import Keys
from activecall.config import RedisSettings
from activecall.redis_clients import sync_client

log = logging.getLogger("activecall.leases")

# A lease that lapsed with nobody holding it is taken again (see the module's docstring).
RENEW_OR_RETAKE = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
if not holder then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""
RETAKEN = 2

RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class LeaseKeeper:
    """Renews one worker's leases of one role (and keeps its session entries claimed) from a thread."""

    def __init__(
        self,
        settings: RedisSettings,
        keys: Keys,
        role: str,
        worker_id: str,
        lease_ttl: float,
        stall_limit: float,
        on_lost: Callable[[str], None],
    ) -> None:
        self.keys = keys
        self.role = role
        self.worker_id = worker_id
        self.lease_ttl = lease_ttl
        self.stall_limit = stall_limit
        self.on_lost = on_lost
        self.stream = keys.sessions(role)
        self.redis = sync_client(settings, socket_timeout=lease_ttl / 2, socket_connect_timeout=lease_ttl / 2)
        self._renew = self.redis.register_script(RENEW_OR_RETAKE)
        self._release = self.redis.register_script(RELEASE_IF_OWNER)
        self._held: dict[str, str] = {}  # call id -> session entry id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_tick = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._last_tick = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"{self.role}-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.lease_ttl)
        self.redis.close()

    def tick(self) -> None:
        """The event loop runs: keep renewing."""
        self._last_tick = time.monotonic()

    def hold(self, call_id: str, entry_id: str) -> None:
        with self._lock:
            self._held[call_id] = entry_id

    def drop(self, call_id: str) -> None:
        with self._lock:
            self._held.pop(call_id, None)

    def renew_once(self) -> list[str]:
        """Renew every held lease (taking a lapsed one again); the call ids whose lease another worker
        holds."""
        with self._lock:
            held = list(self._held.items())
        if not held or time.monotonic() - self._last_tick > self.stall_limit:
            return []
        lease_ms = int(self.lease_ttl * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for call_id, _ in held:
            self._renew(
                keys=[self.keys.lease(self.role, call_id)],
                args=[self.worker_id, lease_ms],
                client=pipe,
            )
        results = pipe.execute()
        kept: list[int | bytes | str | memoryview[int]] = [
            entry_id for (_, entry_id), ok in zip(held, results, strict=True) if ok
        ]
        if kept:
            # An entry re-claimed now never looks idle to the other workers' XAUTOCLAIM.
            self.redis.xclaim(self.stream, self.role, self.worker_id, 0, kept, justid=True)
        lost = [call_id for (call_id, _), ok in zip(held, results, strict=True) if not ok]
        for call_id in lost:
            self.drop(call_id)
        retaken = [call_id for (call_id, _), ok in zip(held, results, strict=True) if ok == RETAKEN]
        with self._lock:
            ended = [call_id for call_id in retaken if call_id not in self._held]
        for call_id in ended:  # its session ended and released the lease while this round ran
            self._release(keys=[self.keys.lease(self.role, call_id)], args=[self.worker_id])
        return lost

    def _run(self) -> None:
        period = self.lease_ttl / 3
        while not self._stop.wait(period):
            try:
                lost = self.renew_once()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("lease renewal failed", extra={"role": self.role, "error": str(exc)})
                continue
            except redis.ResponseError as exc:  # NOGROUP after a Redis restart: the loop recreates it
                log.warning("lease renewal refused", extra={"role": self.role, "error": str(exc)})
                continue
            if lost and self._loop is not None and not self._loop.is_closed():
                for call_id in lost:
                    try:
                        self._loop.call_soon_threadsafe(self.on_lost, call_id)
                    except RuntimeError:  # the loop closed meanwhile
                        return
