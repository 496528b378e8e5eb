"""A call outlives its media worker, with the real services and a real phone (baresip over TLS and
SRTP): the worker holding the call's leg is killed (SIGKILL) or drained (SIGTERM) while the agent
speaks; the edge moves the leg to the other worker and re-INVITEs the phone, and the phone hears the
rest of the agent's turn, compared with the tts output by normalised cross-correlation.

The system runs without media workers of its own (``activecall up`` would start a killed child again);
the two workers here are processes of the test, which kills and drains them.

The moved leg keeps the first leg's SRTP key (``[media] failover_new_key = false``), sent from the new
worker's own SSRC: baresip 1.0.0, the phone these machines have, keeps its receiving SRTP context
when a re-INVITE brings a new key (re-keying a running stream came in baresip 3.12), so with a new
key it would hear nothing. The new key is the default, and tests/sip_edge/test_edge_media_moves.py
checks that baresip receives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from e2e_calls import CallStreams, find_call, report, wait_events, wait_record

from activecall.audio import ncc_peak, read_wav, resample
from activecall.bus import Keys
from activecall.messages import MediaMoved, PlaybackFinished, PlaybackResumed, PlaybackStarted
from activecall.registry import WorkerInfo
from activecall.testing.baresip import BaresipPhone
from activecall.testing.system import System, running_system

RATE = 8000
# Long enough that the worker can be stopped well inside it and most of it is left to hear after.
GREETING = (
    "Hello, and thank you for calling Example Corporation. Before we begin, please listen carefully, "
    "because our menu options have recently changed. You can ask me about our opening hours, our "
    "prices, or the status of an order that you placed with us. You can also ask to speak with a "
    "person at any time, and I will do my best to help you with whatever you need today."
)
PLAYBOOK = f"""---
greeting: "{GREETING}"
llm:
  provider: scripted
interruption:
  enabled: false
---
You are the test agent of a media failover test.
"""
SPOKEN_BEFORE_STOP_S = 3.0
# The new leg resumes from the lost worker's last beat; the old worker may have played up to one beat
# interval (0.5 s) past it. Audio from this far past the resume point can only have come through the
# new leg.
PAST_THE_OLD_LEG_S = 1.0


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    root = tmp_path_factory.mktemp("failover")
    playbooks = root / "playbooks"
    playbooks.mkdir()
    (playbooks / "greeting.md").write_text(PLAYBOOK)
    keep_key = "[media]\nfailover_new_key = false\n"
    with running_system(
        root / "system", media_workers=0, playbook_dirs=[playbooks], extra_config=keep_key
    ) as running:
        yield running


@dataclass
class MediaProcess:
    worker_id: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def registry(system: System) -> dict[str, WorkerInfo]:
    client = redis.Redis.from_url(system.redis_url)
    try:
        raw = client.hgetall(Keys().workers("media"))
    finally:
        client.close()
    return {info.id: info for info in map(WorkerInfo.from_json, raw.values())}


@pytest.fixture
def media_workers(
    system: System, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[list[MediaProcess]]:
    """Two media workers of this test, live in the registry."""
    name = request.node.name.removeprefix("test_")[:12]
    workers = []
    for index in (1, 2):
        worker_id = f"media-{name}-{index}"
        log = tmp_path / f"{worker_id}.log"
        command = [sys.executable, "-m", "activecall.media", "--config", str(system.config)]
        command += ["--worker-id", worker_id, "--metrics-port", "0", "--drain-timeout", "60"]
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        process = subprocess.Popen(command, stderr=log.open("wb"), env=env)
        workers.append(MediaProcess(worker_id, process, log))
    try:
        deadline = time.monotonic() + 60
        while not all(w.worker_id in registry(system) for w in workers):
            assert all(w.process.poll() is None for w in workers), "a media worker exited at start"
            assert time.monotonic() < deadline, "the media workers did not beat within 60 s"
            time.sleep(0.2)
        time.sleep(1.0)  # the edge reads the registry at most every 0.5 s: let it see the workers
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def greeting_audio(streams: CallStreams) -> bytes:
    chunks = [c for c in streams.chunks if c.turn_id == "greeting"]
    assert chunks, "the tts produced no greeting audio"
    return b"".join(resample(c.pcm, c.sample_rate, RATE) for c in chunks)


def heard_audio(phone: BaresipPhone) -> bytes:
    """Everything the phone played, in order (baresip may start a new dump when its stream changes)."""
    heard = b""
    for path in sorted(phone.dump_folder.glob("dump-*-dec.wav")):
        audio, rate = read_wav(path)
        assert rate == RATE
        heard += audio
    return heard


def call_through_a_stopped_worker(
    system: System, workers: list[MediaProcess], folder: Path, user: str, stop: signal.Signals
) -> tuple[CallStreams, MediaProcess, BaresipPhone, float]:
    """Call the agent, stop the leg's worker with ``stop`` a few seconds into the greeting, and follow
    the call until the greeting has finished playing on the new leg; the phone has hung up since.
    Also returns when the worker was stopped."""
    phone = BaresipPhone(folder, None, user, certificate=system.certificate).start()
    try:
        assert phone.dial(f"sip:agent@127.0.0.1:{system.tls_port};transport=tls")["ok"]
        phone.wait_event("CALL_ESTABLISHED", 30)
        assert phone.wait_event("CALL_MENC")["param"] == "0,audio,AES_CM_128_HMAC_SHA1_80"
        call_id = find_call(system.redis_url, user).call_id
        wait_events(
            system.redis_url,
            call_id,
            lambda s: any(isinstance(e, PlaybackStarted) and e.turn_id == "greeting" for e in s.events),
            30,
            "the greeting's first packet",
        )
        time.sleep(SPOKEN_BEFORE_STOP_S)  # let the caller hear part of the greeting from the first leg
        holder = wait_record(system.redis_url, call_id, lambda r: bool(r.media_worker)).media_worker
        (stopped,) = [w for w in workers if w.worker_id == holder]
        stopped_at = time.time()
        stopped.process.send_signal(stop)
        streams = wait_events(
            system.redis_url,
            call_id,
            lambda s: any(isinstance(e, PlaybackFinished) and e.turn_id == "greeting" for e in s.events),
            60,
            "the greeting finishing on the new leg",
        )
        assert not [e for e in phone.events if e.get("type") == "CALL_CLOSED"], "the call ended"
        phone.hangup()
        phone.wait_event("CALL_CLOSED", 10)
    finally:
        phone.stop()
    return streams, stopped, phone, stopped_at


def resumed_part_heard(streams: CallStreams, phone: BaresipPhone, what: str) -> tuple[float, int]:
    """The ncc of the greeting's audio past the resume point inside what the phone heard."""
    (resumed,) = [e for e in streams.of_type(PlaybackResumed) if e.turn_id == "greeting"]
    greeting = greeting_audio(streams)
    start = (resumed.played_ms + int(PAST_THE_OLD_LEG_S * 1000)) * RATE // 1000 * 2
    rest = greeting[start:]
    assert len(rest) >= 2 * RATE * 3, f"only {len(rest) / 2 / RATE:.1f} s of greeting left after the move"
    heard = heard_audio(phone)
    peak, lag = ncc_peak(heard, rest)
    # The greeting was not started again on the new leg: its opening was heard once.
    head = greeting[: 2 * RATE * 3 // 2]
    _, head_at = ncc_peak(heard, head)
    again, _ = ncc_peak(heard[2 * head_at + len(head) :], head)
    assert again < 0.5, f"the opening of the greeting was heard twice (ncc {again:.3f})"
    report(
        f"{what}: greeting resumed at {resumed.played_ms / 1000:.2f} s; the phone heard its last "
        f"{len(rest) / 2 / RATE:.1f} s (ncc {peak:.3f} at {lag / RATE:.2f} s of its recording)"
    )
    return peak, resumed.played_ms


def test_a_killed_media_workers_call_is_moved_and_the_phone_hears_the_agent_again(
    system: System, media_workers: list[MediaProcess], tmp_path: Path
) -> None:
    streams, killed, phone, killed_at = call_through_a_stopped_worker(
        system, media_workers, tmp_path / "phone", "failover-kill", signal.SIGKILL
    )
    (moved,) = streams.of_type(MediaMoved)
    (survivor,) = [w for w in media_workers if w is not killed]
    assert (moved.from_worker, moved.to_worker, moved.reason) == (
        killed.worker_id,
        survivor.worker_id,
        "lost",
    )
    report(f"media worker killed -> media.moved after {moved.ts - killed_at:.2f} s")
    call_id = moved.call_id
    trace = phone.log_text()
    assert trace.count("srtp: audio: SRTP is Enabled") >= 2, "no second SRTP key taken by the phone"
    peak, played_ms = resumed_part_heard(streams, phone, "media worker killed")
    assert peak >= 0.9
    assert played_ms >= 1000  # resumed inside the greeting, not from its start
    record = wait_record(system.redis_url, call_id, lambda r: r.state == "ended")
    assert record.media_worker == survivor.worker_id
    assert record.end_reason == "remote hangup"
    assert (
        record.transcript[0]["speaker"] == "agent"
        and "whatever you need today" in record.transcript[0]["text"]
    )


def test_a_draining_media_worker_hands_its_call_over_and_exits(
    system: System, media_workers: list[MediaProcess], tmp_path: Path
) -> None:
    streams, drained, phone, drained_at = call_through_a_stopped_worker(
        system, media_workers, tmp_path / "phone", "failover-drain", signal.SIGTERM
    )
    (moved,) = streams.of_type(MediaMoved)
    call_id = moved.call_id
    report(f"media worker sent SIGTERM -> media.moved after {moved.ts - drained_at:.2f} s")
    (survivor,) = [w for w in media_workers if w is not drained]
    assert (moved.from_worker, moved.to_worker, moved.reason) == (
        drained.worker_id,
        survivor.worker_id,
        "draining",
    )
    assert drained.process.wait(timeout=30) == 0
    log = drained.log.read_text()
    assert "drain did not finish" not in log
    peak, _ = resumed_part_heard(streams, phone, "media worker drained")
    assert peak >= 0.9
    record = wait_record(system.redis_url, call_id, lambda r: r.state == "ended")
    assert record.end_reason == "remote hangup" and record.media_worker == survivor.worker_id
