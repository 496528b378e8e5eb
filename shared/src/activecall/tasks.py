"""Stopping tasks for sure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Final

RETRY_S: Final = 0.05


async def stop_tasks(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel the tasks and wait until they have ended.

    The cancellation is repeated until each task is done: redis-py can swallow a cancellation that
    arrives in the middle of a command (the command then returns normally), and a task that missed
    it would run on.
    """
    pending = {t for t in tasks if t is not None and not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RETRY_S)
