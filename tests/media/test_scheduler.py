"""The pacing clock: ticks on a fixed grid, and skipped ticks after a stall."""

from __future__ import annotations

import asyncio
import time

import pytest

from activecall.media.scheduler import Pacer, TimerFd


@pytest.mark.parametrize("precise", [True, False], ids=["timerfd", "loop-timers"])
async def test_ticks_stay_on_the_grid_and_a_stall_skips_ticks(precise: bool) -> None:
    ticks: list[tuple[float, int]] = []
    done = asyncio.Event()

    def on_tick(due: float, skipped: int) -> None:
        ticks.append((due, skipped))
        if len(ticks) == 3:
            time.sleep(0.25)  # the loop stalls for twelve ticks and a half
        if len(ticks) == 6:
            done.set()

    pacer = Pacer(on_tick, interval=0.02, max_lag=0.1, precise=precise)
    pacer.start()
    assert (pacer.timer is not None) is precise
    await asyncio.wait_for(done.wait(), 2)
    await pacer.stop()
    assert pacer.timer is None
    dues = [due for due, _ in ticks[:6]]
    steps = [round((b - a) / 0.02) for a, b in zip(dues, dues[1:], strict=False)]
    skipped = [s for _, s in ticks[:6]]
    assert skipped[:3] == [0, 0, 0] and skipped[3] >= 8 and skipped[4:] == [0, 0]
    assert steps == [1, 1, 1 + skipped[3], 1, 1]  # every due time is origin + n * 20 ms
    assert pacer.skipped == skipped[3]


async def test_a_timerfd_is_readable_from_its_deadline_on_not_before() -> None:
    timer = TimerFd()
    loop = asyncio.get_running_loop()
    wakes: list[float] = []
    woke = asyncio.Event()

    def on_readable() -> None:
        timer.clear()
        wakes.append(time.monotonic())
        woke.set()

    loop.add_reader(timer.fd, on_readable)
    try:
        armed = time.monotonic()
        timer.arm_at(armed + 0.05)
        await asyncio.wait_for(woke.wait(), 2)
        await asyncio.sleep(0.05)
        assert len(wakes) == 1  # one-shot, and cleared by the read
        assert wakes[0] >= armed + 0.05  # the kernel fires at the deadline, never before it
        woke.clear()
        timer.arm_at(armed)  # a deadline already past fires at once
        await asyncio.wait_for(woke.wait(), 2)
        assert len(wakes) == 2
    finally:
        loop.remove_reader(timer.fd)
        timer.close()


@pytest.mark.parametrize("precise", [True, False], ids=["timerfd", "loop-timers"])
async def test_a_tick_due_during_a_burst_of_io_runs_before_the_rest_of_the_burst(precise: bool) -> None:
    """A callback that keeps the loop busy past a due time (a burst of datagrams) lets the tick go
    first through run_if_due; the timer then finds it done: no tick twice, none off the grid."""
    ticks: list[tuple[float, float]] = []
    done = asyncio.Event()
    pacer: Pacer

    def on_tick(due: float, skipped: int) -> None:
        ticks.append((due, time.monotonic()))
        if len(ticks) == 6:
            done.set()

    def burst() -> None:  # 60 ms of packets, each asking the pacer first
        end = time.monotonic() + 0.06
        while time.monotonic() < end:
            pacer.run_if_due()

    pacer = Pacer(on_tick, interval=0.02, max_lag=0.2, precise=precise)
    pacer.start()
    await asyncio.sleep(0.03)
    asyncio.get_running_loop().call_soon(burst)
    await asyncio.wait_for(done.wait(), 2)
    await pacer.stop()
    dues = [due for due, _ in ticks]
    assert [round((b - a) / 0.02) for a, b in zip(dues, dues[1:], strict=False)] == [1] * 5
    assert max(ran - due for due, ran in ticks) < 0.03  # none waited for the rest of the 60 ms burst
