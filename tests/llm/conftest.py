"""Fixtures of the llm tests: a harness on this test's own Redis prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from llm_harness import Harness

from activecall.config import RedisSettings


@pytest.fixture
async def harness(redis_settings: RedisSettings, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(redis_settings, tmp_path)
    try:
        yield h
    finally:
        await h.close()
