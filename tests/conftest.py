"""Fixtures shared by every test: a real Redis (private server unless REDIS_URL is set); and the slow lane:
the tests `make test-fast` leaves out (`pytest -m "not slow"`), listed in SLOW below."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from activecall.bus import Bus
from activecall.config import RedisSettings
from activecall.testing.redis_server import RedisServer, external_redis_url
from activecall.testing.sentinel import SentinelCluster


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = external_redis_url()
    if url:
        yield url
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_settings(redis_url: str) -> RedisSettings:
    """Settings with a prefix of this test's own, so tests never see each other's keys."""
    return RedisSettings(url=redis_url, prefix=f"t{secrets.token_hex(4)}:", lease_ttl=1.0)


@pytest.fixture
async def bus(redis_settings: RedisSettings) -> AsyncIterator[Bus]:
    bus = Bus.from_settings(redis_settings)
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[SentinelCluster]:
    """A Redis master, its replica and three sentinels (Debian's redis-sentinel) on loopback."""
    cluster = SentinelCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


# The slow lane: a folder (ending in "/") or a module, whole (None) or some of its tests (with all their
# parameters). `make test` runs everything; `make test-fast` runs `pytest -m "not slow"`, which leaves
# these out. What belongs here: tests of the whole system or of several real processes, accuracy runs of
# the real speech engines, fuzzing loops, and tests that wait out a real timeout; as a rule, a test that
# takes more than about 3 s on its own. A module may also mark itself (`pytestmark = pytest.mark.slow`).
SLOW: dict[str, list[str] | None] = {
    "tests/e2e/": None,  # the whole system as `make run` starts it, called by a real phone
    "tests/ops/test_prometheus_targets.py": None,  # a real Prometheus scraping every process of `make run`
    "tests/api/test_guide_curl.py": None,  # the guide's curl against the whole system
    "tests/api/test_api_process.py": None,  # the real api process; schemathesis against its schema
    "tests/shared/test_services.py": None,  # the six services as real processes: up, drain, stop
    "tests/asr/test_asr_service.py": None,  # the default engine's accuracy over the bus
    "tests/asr/test_asr_failover.py": None,  # two asr processes, one killed mid-utterance
    "tests/llm/test_failover.py": None,  # two llm processes, one killed mid-call
    "tests/tts/test_tts_service.py": None,  # Piper over the bus, sentence after sentence
    "tests/sip_edge/test_edge_memory.py": None,  # a steady call rate through the edge, memory measured
    "tests/shared/test_sessions.py": [
        "test_a_killed_worker_s_session_is_taken_over_from_its_cursor",  # a lease left to expire
        "test_a_session_goes_on_through_a_redis_restart_from_its_append_only_file",  # Redis away 2 s
    ],
    "tests/shared/test_redis_clients.py": [
        "test_every_client_follows_the_master_through_a_failover",  # real sentinels fail a master over
    ],
    "tests/api/test_api_events.py": [
        "test_sse_stays_open_on_a_quiet_call_longer_than_the_redis_socket_timeout",  # waits it out
    ],
    "tests/asr/test_turn_detector.py": [
        "test_cough_gives_one_empty_final",  # waits out the deadline for a second final that must not come
    ],
    "tests/sip_edge/test_parser_fuzz.py": [
        "test_mutated_messages_only_raise_sip_parse_error",  # 100,000 mutated messages
    ],
    "tests/asr/test_asr_engines.py": [  # accuracy runs
        "test_piper_speech_at_its_native_rate_is_transcribed_back",
        "test_telephone_sentences_with_the_default_engine",
        "test_phrase_hints_lift_in_domain_speech",
        "test_phrase_hints_leave_other_speech_to_the_general_model",
        "test_vosk_stream_gives_partials_and_timed_finals",
    ],
}
SLOW_IDS = [
    entry
    for path, names in SLOW.items()
    for entry in ([path] if names is None else [f"{path}::{name}" for name in names])
]


def _slow_entry(nodeid: str) -> str | None:
    for entry in SLOW_IDS:
        if entry.endswith("/"):
            if nodeid.startswith(entry):
                return entry
        elif nodeid == entry or nodeid.startswith((entry + "::", entry + "[")):
            return entry
    return None


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the marks must be on by then
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    used: set[str] = set()
    for item in items:
        entry = _slow_entry(item.nodeid)
        if entry is not None:
            item.add_marker(pytest.mark.slow)
            used.add(entry)
    # A renamed or removed test must not leave the slow lane quietly: a folder or module must exist, and on a
    # run of the whole suite (no paths given) every test named must have been collected.
    stale = [path for path in SLOW if not (config.rootpath / path).exists()]
    if config.args_source is pytest.Config.ArgsSource.TESTPATHS:
        collected = {item.nodeid.split("::")[0] for item in items}
        stale += [e for e in SLOW_IDS if "::" in e and e.split("::")[0] in collected and e not in used]
    if stale:
        raise pytest.UsageError(f"tests/conftest.py: SLOW names no test: {', '.join(sorted(stale))}")
