"""Fixtures of the gateway tests: the app on a real Redis with a playbook directory of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from api_helpers import TOKEN, client_for

from activecall.api.app import create_app
from activecall.bus import Bus
from activecall.config import ApiSettings, Config, PlaybookSettings, RedisSettings


@pytest.fixture
def playbook_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "playbooks"
    directory.mkdir()
    (directory / "sales.md").write_text("---\ngreeting: Hello\n---\n")
    return directory


@pytest.fixture
def config(redis_settings: RedisSettings, playbook_dir: Path) -> Config:
    return Config(redis=redis_settings, playbooks=PlaybookSettings(dirs=[str(playbook_dir)]))


@pytest.fixture
def token_config(config: Config) -> Config:
    config.api = ApiSettings(tokens=["another-token", TOKEN])
    return config


@pytest.fixture
async def client(config: Config, bus: Bus) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(config, bus)) as c:
        yield c
