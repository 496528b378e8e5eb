"""One pacing clock for every leg of a worker: a tick every 20 ms on a monotonic schedule.

Each tick is due at ``origin + n * interval``, never at "last tick + interval", so the wake-up
latency of one tick does not shift the ticks after it. The tick runs as a timer callback rather than
a sleeping task: the event loop runs timers before it handles the I/O that became ready, whereas a
task woken by a timer waits behind that I/O. Event-loop timers have millisecond resolution (uvloop's
clock is libuv's), so a timer that fires early finishes the wait in a short spin of at most
``SPIN_S``.

After a stall longer than ``max_lag`` (a GC pause, a stopped process) the missed ticks are skipped and
reported to the callback, which moves the RTP clocks on without sending a burst of stale audio.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger("activecall.media.scheduler")

TICK_S: Final = 0.020
MAX_LAG_S: Final = 0.2
SPIN_S: Final = 0.0015


class Pacer:
    """Calls ``on_tick(due, skipped)`` once per interval; ``due`` is the monotonic time the tick was due
    and ``skipped`` how many ticks before it were dropped after a stall."""

    def __init__(
        self,
        on_tick: Callable[[float, int], None],
        interval: float = TICK_S,
        max_lag: float = MAX_LAG_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_tick = on_tick
        self.interval = interval
        self.max_lag = max_lag
        self.clock = clock
        self.ticks = 0
        self.skipped = 0
        self._due = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = self.clock() + self.interval
        self._arm()

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None

    def _arm(self) -> None:
        if self._loop is not None:
            self._handle = self._loop.call_later(max(0.0, self._due - self.clock()), self._fire)

    def _fire(self) -> None:
        early = self._due - self.clock()
        if early > SPIN_S:
            self._arm()
            return
        while early > 0:
            early = self._due - self.clock()
        due, skipped = self._catch_up(self._due)
        try:
            self.on_tick(due, skipped)
        except Exception:
            log.exception("pacing tick failed")
        self.ticks += 1
        self._due = due + self.interval
        self._arm()

    def _catch_up(self, due: float) -> tuple[float, int]:
        lag = self.clock() - due
        if lag <= self.max_lag:
            return due, 0
        skipped = int(lag / self.interval)
        self.skipped += skipped
        log.warning("pacing stalled; skipping ticks", extra={"lag_s": round(lag, 3), "skipped": skipped})
        return due + skipped * self.interval, skipped
