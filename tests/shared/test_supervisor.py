"""``activecall up`` as a supervisor: how many children of each role, and when a dead one starts again."""

from __future__ import annotations

import random
import subprocess
from typing import cast

import pytest

from activecall.config import Config
from activecall.launcher import (
    HEALTHY_AFTER_S,
    RESTART_MAX_S,
    Child,
    Launcher,
    Restarts,
    parse_workers,
    restart_delay,
)


class FakeProcess:
    pid = 4242

    def __init__(self, status: int | None = None) -> None:
        self.status = status

    def poll(self) -> int | None:
        return self.status


def test_workers_option_names_a_count_per_role() -> None:
    assert parse_workers("asr=2, llm=3,media=0") == {"asr": 2, "llm": 3, "media": 0}
    assert parse_workers("") == {}


def test_the_plan_starts_several_of_a_role_with_free_metrics_ports_for_the_extra_ones() -> None:
    launcher = Launcher(Config(), None, workers={"asr": 3, "media": 0})
    plan = launcher.plan()
    asr = [(worker_id.rsplit("-", 1)[1], port) for role, worker_id, port in plan if role == "asr"]
    assert asr == [("1", None), ("2", 0), ("3", 0)]
    assert not [p for p in plan if p[0] == "media"]
    assert sorted({p[0] for p in plan}) == ["api", "asr", "llm", "sip-edge", "tts"]


def test_restart_delay_doubles_up_to_a_cap_with_jitter() -> None:
    rand = random.Random(7)
    delays = [restart_delay(n, rand) for n in range(1, 9)]
    for n, delay in enumerate(delays, start=1):
        base = min(RESTART_MAX_S, 2.0 ** (n - 1))
        assert 0.8 * base <= delay <= base
    assert delays[-1] <= RESTART_MAX_S


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch) -> tuple[Launcher, list[str]]:
    launcher = Launcher(Config(), None)
    spawned: list[str] = []

    def spawn(role: str, worker_id: str, port: int | None) -> subprocess.Popen[bytes]:
        spawned.append(worker_id)
        return cast("subprocess.Popen[bytes]", FakeProcess())

    monkeypatch.setattr(launcher, "_spawn", spawn)
    return launcher, spawned


def child(worker_id: str, status: int | None, started: float = 0.0) -> Child:
    process = cast("subprocess.Popen[bytes]", FakeProcess(status))
    return Child(worker_id.split("-")[0], worker_id, None, process, Restarts(worker_id, started))


def test_a_dead_child_starts_again_after_a_growing_delay_and_the_others_are_left_alone(
    launcher: tuple[Launcher, list[str]],
) -> None:
    supervisor, spawned = launcher
    dead, alive = child("llm-h-1", -9), child("asr-h-1", None)
    supervisor.children = [dead, alive]
    supervisor.supervise(1.0)
    due = dead.restarts.due
    assert due is not None and 1.0 + 0.8 <= due <= 1.0 + 1.0
    supervisor.supervise(due - 0.01)
    assert spawned == []
    supervisor.supervise(due)
    assert spawned == ["llm-h-1"] and dead.restarts.due is None and dead.process.poll() is None
    # It dies again at once: the next delay is about twice as long.
    cast(FakeProcess, dead.process).status = 1
    supervisor.supervise(5.0)
    due = dead.restarts.due
    assert dead.restarts.failures == 2 and due is not None and 5.0 + 1.6 <= due <= 5.0 + 2.0
    assert alive.restarts.due is None and alive.restarts.failures == 0


def test_a_child_that_ran_a_while_restarts_after_the_first_delay_again(
    launcher: tuple[Launcher, list[str]],
) -> None:
    supervisor, _ = launcher
    veteran = child("tts-h-1", 0, started=0.0)
    veteran.restarts.failures = 5
    supervisor.children = [veteran]
    supervisor.supervise(HEALTHY_AFTER_S + 1)
    due = veteran.restarts.due
    assert veteran.restarts.failures == 1
    assert due is not None and due - (HEALTHY_AFTER_S + 1) <= 1.0
