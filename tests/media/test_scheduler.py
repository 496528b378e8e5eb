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


async def test_a_tick_due_during_a_burst_of_io_runs_at_once_but_once_per_loop_iteration() -> None:
    """run_if_due, asked before each datagram: the tick that fell due goes first, not after the rest of
    the burst; a second due in the same iteration waits for the next one (on a simulated clock)."""
    now = [100.0]
    ticks: list[float] = []
    pacer = Pacer(lambda due, skipped: ticks.append(due), interval=0.02, clock=lambda: now[0])
    pacer.start()
    origin = now[0]
    pacer.run_if_due()
    assert ticks == []  # not due yet
    now[0] = origin + 0.0201
    pacer.run_if_due()
    assert ticks == pytest.approx([origin + 0.02])
    now[0] = origin + 0.0401  # the burst went on past the next due time
    pacer.run_if_due()
    assert ticks == pytest.approx([origin + 0.02])  # one early tick in this iteration
    await asyncio.sleep(0)  # the loop's next iteration
    pacer.run_if_due()
    assert ticks == pytest.approx([origin + 0.02, origin + 0.04])
    await pacer.stop()


async def test_an_overloaded_loop_runs_one_early_tick_per_iteration_so_other_callbacks_get_through() -> None:
    """Ticks that take longer than the interval keep a tick always due: a burst of packets asking the
    pacer must not run one tick after another before the loop's other callbacks (the bus reader)."""
    ticks: list[float] = []
    reader_ran: list[int] = []

    def on_tick(due: float, skipped: int) -> None:
        ticks.append(due)
        time.sleep(0.025)  # each tick overruns the 20 ms interval

    pacer = Pacer(on_tick, interval=0.02, max_lag=1.0)
    pacer.start()
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()

    def burst() -> None:  # 200 datagrams in one go, each asking the pacer first
        for _ in range(200):
            pacer.run_if_due()

    before = len(ticks)
    loop.call_soon(burst)
    loop.call_soon(lambda: reader_ran.append(len(ticks)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await pacer.stop()
    assert reader_ran and reader_ran[0] - before <= 2  # the reader ran after one early tick, not 200
