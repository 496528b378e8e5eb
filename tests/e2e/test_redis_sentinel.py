"""A call outlives the loss of its Redis master: the system runs against a real Redis Sentinel set-up
(a master, a replica and three sentinels from Debian's redis-sentinel, on loopback), the master is
SIGKILLed after the greeting, the sentinels promote the replica, and every service finds the new
master through them. The caller (baresip over TLS and SRTP) still gets its answer, then the goodbye
and the agent's hangup, as in any conversation."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_calls import report, wait_greeting_played
from test_conversation import check_conversation, converse

from activecall.testing.sentinel import SentinelCluster
from activecall.testing.system import System, running_system


@pytest.fixture(scope="module")
def sentinel_system(tmp_path_factory: pytest.TempPathFactory, cluster: SentinelCluster) -> Iterator[System]:
    root = tmp_path_factory.mktemp("sentinel")
    with running_system(root, redis_config=cluster.config()) as running:
        yield dataclasses.replace(running, redis_url=f"redis://127.0.0.1:{cluster.master_port()}/0")


def fail_the_master_over(system: System, cluster: SentinelCluster, user: str) -> None:
    """After the greeting: SIGKILL the master, wait for the sentinels' failover, and look at the new
    master from then on."""
    wait_greeting_played(system.redis_url, user)
    old = cluster.master_port()
    cluster.kill_master()
    killed = time.monotonic()
    new = cluster.wait_failover(old)
    report(f"sentinels promoted the replica {time.monotonic() - killed:.1f} s after the master's SIGKILL")
    system.redis_url = f"redis://127.0.0.1:{new}/0"


def test_a_call_goes_on_through_a_sentinel_failover(
    sentinel_system: System, cluster: SentinelCluster, tmp_path: Path
) -> None:
    first_master = sentinel_system.redis_url
    phone, call_id = converse(
        sentinel_system,
        tmp_path,
        "through-failover",
        before_question_s=10.0,  # the playbook asks "are you still there" after 8 s of silence
        meanwhile=lambda: fail_the_master_over(sentinel_system, cluster, "through-failover"),
    )
    assert sentinel_system.redis_url != first_master
    check_conversation(sentinel_system, phone, call_id, "agent")
