"""One pacing clock for every leg of a worker: a tick every 20 ms on a monotonic schedule.

Each tick is due at ``origin + n * interval``, never at "last tick + interval", so the wake-up
latency of one tick does not shift the ticks after it. The tick runs as a callback of the event loop
rather than as a sleeping task, which would wait behind the I/O that became ready with it.

On Linux the loop is woken by a timerfd (timerfd_create(2)) armed at the tick's due time on
CLOCK_MONOTONIC, the clock of ``time.monotonic``, to the nanosecond. The event loop's own timers have
millisecond resolution (uvloop's clock is libuv's) and fire up to a millisecond late, half of the 2 ms
send jitter a leg may show; they remain the fallback elsewhere, where a timer that fires early finishes
the wait in a short spin of at most ``SPIN_S``.

After a stall longer than ``max_lag`` (a GC pause, a stopped process) the missed ticks are skipped and
reported to the callback, which moves the RTP clocks on without sending a burst of stale audio.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger("activecall.media.scheduler")

TICK_S: Final = 0.020
MAX_LAG_S: Final = 0.2
SPIN_S: Final = 0.0015
_CLOCK_MONOTONIC: Final = 1
_TFD_TIMER_ABSTIME: Final = 1
_NANOSECONDS: Final = 1_000_000_000


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("it_interval", _TimeSpec), ("it_value", _TimeSpec)]


class TimerFd:
    """A one-shot CLOCK_MONOTONIC timerfd (timerfd_create(2)): readable from an absolute deadline on.
    Raises OSError where the system has none."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            create, self._settime = libc.timerfd_create, libc.timerfd_settime
        except AttributeError:
            raise OSError("timerfd is not available on this system") from None
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_ITimerSpec), ctypes.c_void_p]
        fd = create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)  # TFD_NONBLOCK | TFD_CLOEXEC
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"timerfd_create: {os.strerror(errno)}")
        self.fd: int = fd
        self._spec = _ITimerSpec()
        self._spec_ref = ctypes.byref(self._spec)

    def arm_at(self, deadline: float) -> None:
        """Readable from ``deadline`` on (seconds on ``time.monotonic``); a past deadline at once."""
        nanoseconds = max(1, int(deadline * _NANOSECONDS))  # a zero it_value would disarm the timer
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(nanoseconds, _NANOSECONDS)
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"timerfd_settime: {os.strerror(errno)}")

    def clear(self) -> None:
        """Read the expiration count, so that the descriptor is no longer readable."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


class Pacer:
    """Calls ``on_tick(due, skipped)`` once per interval; ``due`` is the monotonic time the tick was due
    and ``skipped`` how many ticks before it were dropped after a stall."""

    def __init__(
        self,
        on_tick: Callable[[float, int], None],
        interval: float = TICK_S,
        max_lag: float = MAX_LAG_S,
        clock: Callable[[], float] = time.monotonic,
        precise: bool = True,
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
        self._precise = precise and clock is time.monotonic  # the timerfd's clock is the monotonic one
        self.timer: TimerFd | None = None
        self._ran_early = False  # run_if_due ran a tick in this loop iteration

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._precise:
            try:
                self.timer = TimerFd()
            except OSError as exc:
                log.warning("no timerfd; pacing with the event loop's timers", extra={"error": str(exc)})
            else:
                self._loop.add_reader(self.timer.fd, self._on_timer)
        self._due = self.clock() + self.interval
        self._arm()

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.timer is not None and self._loop is not None:
            self._loop.remove_reader(self.timer.fd)
            self.timer.close()
            self.timer = None
        self._loop = None

    def run_if_due(self) -> None:
        """Run the tick now if it is due. The event loop runs every ready socket's callback before it
        looks at the timer again, so after a burst of packets the tick would wait for all of them;
        called before each packet, this lets it go first (the timer then finds it done and re-arms).

        At most one tick a loop iteration goes this way: on a worker too loaded to keep up every
        packet would find a tick due, and back-to-back ticks would starve the bus reader, so that
        not even a leg.close could get through."""
        if self._ran_early or self.clock() < self._due or self._loop is None:
            return
        self._ran_early = True
        self._loop.call_soon(self._next_iteration)
        self._fire()

    def _next_iteration(self) -> None:
        self._ran_early = False

    def _arm(self) -> None:
        if self._loop is None:
            return
        if self.timer is not None:
            self.timer.arm_at(self._due)
        else:
            if self._handle is not None:
                self._handle.cancel()  # the tick ran before its timer (run_if_due)
            self._handle = self._loop.call_later(max(0.0, self._due - self.clock()), self._fire)

    def _on_timer(self) -> None:
        if self.timer is not None:
            self.timer.clear()
            self._fire()

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
