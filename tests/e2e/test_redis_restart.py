"""A call outlives a Redis restart: with the system as ``make run`` starts it (``activecall up``, whose
Redis keeps an append-only file), the redis-server is SIGKILLed after the greeting, the supervisor
starts it again from that file, and the caller's question still gets its answer, heard by a real phone
(baresip over TLS and SRTP), then the goodbye and the agent's hangup, as in any conversation."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from e2e_calls import report, wait_greeting_played
from test_conversation import check_conversation, converse

from activecall.testing.system import System, running_system

REDIS_BACK_WITHIN_S = 15.0


@pytest.fixture(scope="module")
def own_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system of this module's own: the shared one's Redis is not to be killed."""
    with running_system(tmp_path_factory.mktemp("redis-restart")) as running:
        yield running


def kill_redis_after_the_greeting(system: System, user: str) -> None:
    wait_greeting_played(system.redis_url, user)
    with redis.Redis.from_url(system.redis_url) as client:
        pid = int(client.info("server")["process_id"])
        keys_before = client.dbsize()
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    deadline = killed + REDIS_BACK_WITHIN_S
    with redis.Redis.from_url(system.redis_url, socket_timeout=1) as client:
        while True:
            try:
                if int(client.info("server")["process_id"]) != pid:
                    break
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the supervisor did not start Redis again"
            time.sleep(0.1)
        kept = client.dbsize()
    back_s = time.monotonic() - killed
    report(f"redis-server back {back_s:.1f} s after SIGKILL with {kept} of {keys_before} keys")
    assert kept >= keys_before * 0.9, "Redis came back without its append-only file"


def test_a_call_goes_on_through_a_redis_restart(own_system: System, tmp_path: Path) -> None:
    phone, call_id = converse(
        own_system,
        tmp_path,
        "through-redis",
        before_question_s=10.0,
        meanwhile=lambda: kill_redis_after_the_greeting(own_system, "through-redis"),
    )
    check_conversation(own_system, phone, call_id, "agent")
    assert "redis-server started again" in own_system.log.read_text()
