"""Admission: the source ACL and media placement from the worker registry."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from activecall.bus import Bus
from activecall.registry import WorkerInfo
from activecall.sip_edge.app.admission import Acl, AclError, Admission, MediaPool


def test_acl_denies_first_then_allows_only_the_allow_list() -> None:
    twilio = Acl(allow=["54.172.60.0/30", "54.244.51.0/30", "2001:db8::/32"], deny=["54.172.60.3"])
    assert twilio.permits("54.172.60.1")
    assert twilio.permits("54.244.51.2")
    assert twilio.permits("2001:db8::5")
    assert not twilio.permits("54.172.60.3")  # denied inside an allowed block
    assert not twilio.permits("54.172.60.4")
    assert not twilio.permits("not an address")
    everyone = Acl(deny=["10.0.0.0/8"])
    assert everyone.permits("192.0.2.1")
    assert not everyone.permits("10.1.2.3")


def test_a_bad_acl_entry_is_reported_with_its_key() -> None:
    with pytest.raises(AclError, match=r"acl.allow: '54.172.60.0/33' is not an address or CIDR block"):
        Acl(allow=["54.172.60.0/33"])


async def beat(
    bus: Bus,
    worker: str,
    load: int,
    capacity: int,
    draining: bool = False,
    role: str = "media",
    ts: float | None = None,
) -> None:
    info = WorkerInfo(
        id=worker,
        role=role,
        host="h",
        pid=1,
        metrics_port=0,
        load=load,
        capacity=capacity,
        draining=draining,
    )
    if ts is not None:
        info.ts = ts
    await bus.redis.hset(bus.keys.workers(role), worker, info.to_json())


async def test_legs_go_to_the_least_loaded_live_worker_and_spread_in_a_burst(bus: Bus) -> None:
    await beat(bus, "m1", load=50, capacity=100)
    await beat(bus, "m2", load=10, capacity=100)
    await beat(bus, "m3", load=0, capacity=100, draining=True)
    pool = MediaPool(bus.redis, bus.keys, ttl=5.0, refresh_s=60.0)
    assert await pool.has_capacity()
    picks = [(await pool.pick()).id for _ in range(60)]  # type: ignore[union-attr]
    # m2 takes every leg until its load ratio reaches m1's (10 + 40 = 50), then they alternate.
    assert picks[:40] == ["m2"] * 40
    assert sorted(set(picks[40:])) == ["m1", "m2"]
    assert (await pool.pick(exclude=["m1", "m2"])) is None


async def test_no_live_worker_means_no_capacity(bus: Bus) -> None:
    await beat(bus, "full", load=100, capacity=100)
    pool = MediaPool(bus.redis, bus.keys, ttl=5.0)
    assert not await pool.has_capacity()
    assert await pool.pick() is None


async def test_calls_that_find_the_registry_stale_together_share_one_read(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    from activecall.sip_edge.app import admission

    reads = 0
    real = admission.list_workers

    async def counted(*args: Any, **kwargs: Any) -> list[WorkerInfo]:
        nonlocal reads
        reads += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(admission, "list_workers", counted)
    await beat(bus, "m1", load=0, capacity=100)
    pool = MediaPool(bus.redis, bus.keys, ttl=5.0, refresh_s=60.0)
    answers = await asyncio.gather(*(pool.has_capacity() for _ in range(20)))
    assert answers == [True] * 20
    assert reads == 1
    await pool.has_capacity()  # fresh: no read
    assert reads == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_read(bus: Bus) -> None:
    await beat(bus, "m1", load=0, capacity=100)
    pool = MediaPool(bus.redis, bus.keys, ttl=5.0, refresh_s=60.0)
    first = asyncio.ensure_future(pool.workers())
    second = asyncio.ensure_future(pool.workers())
    await asyncio.sleep(0)
    first.cancel()
    assert [w.id for w in await second] == ["m1"]
    assert first.cancelled()


async def test_a_call_is_admitted_only_when_every_role_has_room(bus: Bus) -> None:
    admission = Admission(MediaPool(bus.redis, bus.keys, ttl=5.0, refresh_s=0.0), bus.redis, bus.keys, 5.0)
    for pool in admission.sessions.values():
        pool.refresh_s = 0.0  # read the registry every time
    await beat(bus, "m1", load=0, capacity=10)
    assert await admission.lacking() == "asr"  # no asr worker at all
    await beat(bus, "a1", load=4, capacity=4, role="asr")
    await beat(bus, "a2", load=0, capacity=4, role="asr", draining=True)
    assert await admission.lacking() == "asr"  # one full, one draining
    await beat(bus, "a3", load=3, capacity=4, role="asr")
    await beat(bus, "l1", load=0, capacity=20, role="llm")
    assert await admission.lacking() == "tts"
    await beat(bus, "t1", load=199, capacity=200, role="tts")
    assert await admission.lacking() is None
    await beat(bus, "m1", load=10, capacity=10)
    assert await admission.lacking() == "media"


async def test_calls_admitted_since_the_last_read_count_against_a_roles_room(bus: Bus) -> None:
    admission = Admission(MediaPool(bus.redis, bus.keys, ttl=5.0), bus.redis, bus.keys, 5.0)
    for pool in admission.sessions.values():
        pool.refresh_s = 60.0
    await beat(bus, "m1", load=0, capacity=10)
    for role in ("asr", "llm", "tts"):
        await beat(bus, f"{role}-1", load=0, capacity=2, role=role)
    assert await admission.lacking() is None
    admission.admitted()
    assert await admission.lacking() is None
    admission.admitted()
    assert await admission.lacking() == "asr"  # the heartbeats do not show the two calls yet


async def test_a_refusal_reads_the_registry_again_first(bus: Bus) -> None:
    """The tts worker beats for the first time just after the edge's last read: the call is not
    refused for that cached read."""
    admission = Admission(MediaPool(bus.redis, bus.keys, ttl=5.0), bus.redis, bus.keys, 5.0)
    for pool in admission.sessions.values():
        pool.refresh_s = 60.0
    await beat(bus, "m1", load=0, capacity=10)
    for role in ("asr", "llm"):
        await beat(bus, f"{role}-1", load=0, capacity=2, role=role)
    assert await admission.lacking() == "tts"
    await beat(bus, "tts-1", load=0, capacity=2, role="tts")
    await asyncio.sleep(0.06)
    assert await admission.lacking() is None


async def test_admitted_calls_count_until_a_beat_shows_them(bus: Bus) -> None:
    """Reading the registry again does not forget the calls admitted since: they count until every
    live worker of the role has beaten well after them."""
    admission = Admission(MediaPool(bus.redis, bus.keys, ttl=5.0), bus.redis, bus.keys, 5.0)
    await beat(bus, "m1", load=0, capacity=10)
    for role in ("asr", "llm", "tts"):
        await beat(bus, f"{role}-1", load=0, capacity=2, role=role)
    admission.admitted()
    admission.admitted()
    await asyncio.sleep(0.06)
    assert await admission.lacking() == "asr"  # read again: the beats still predate the two calls
    later = time.time() + 3.0  # the workers' next beats, which show the two calls
    for role in ("asr", "llm", "tts"):
        await beat(bus, f"{role}-1", load=1, capacity=2, role=role, ts=later)
    await asyncio.sleep(0.06)
    assert await admission.lacking() is None
