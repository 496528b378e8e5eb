"""The pacing clock: ticks on a fixed grid, and skipped ticks after a stall."""

from __future__ import annotations

import asyncio
import time

from activecall.media.scheduler import Pacer


async def test_ticks_stay_on_the_grid_and_a_stall_skips_ticks() -> None:
    ticks: list[tuple[float, int]] = []
    done = asyncio.Event()

    def on_tick(due: float, skipped: int) -> None:
        ticks.append((due, skipped))
        if len(ticks) == 3:
            time.sleep(0.25)  # the loop stalls for twelve ticks and a half
        if len(ticks) == 6:
            done.set()

    pacer = Pacer(on_tick, interval=0.02, max_lag=0.1)
    pacer.start()
    await asyncio.wait_for(done.wait(), 2)
    await pacer.stop()
    dues = [due for due, _ in ticks[:6]]
    steps = [round((b - a) / 0.02) for a, b in zip(dues, dues[1:], strict=False)]
    skipped = [s for _, s in ticks[:6]]
    assert skipped[:3] == [0, 0, 0] and skipped[3] >= 8 and skipped[4:] == [0, 0]
    assert steps == [1, 1, 1 + skipped[3], 1, 1]  # every due time is origin + n * 20 ms
    assert pacer.skipped == skipped[3]
