"""A call outlives its SIP edge: the edge is a process killed with SIGKILL (or sent SIGTERM), and another
edge process, on the same SIP port or beside it, goes on with the call from its dialog in Redis. Real
peers (SIPp, a scripted UDP phone), a real Redis, a stand-in media worker (:class:`MediaResponder`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sip_harness import AUDIO_OFFER, SCENARIOS, EdgeFactory, RawPhone, poll

from activecall.bus import Bus
from activecall.config import RedisSettings
from activecall.contract import Role
from activecall.messages import CallEnded, Hangup, Message
from activecall.registry import list_workers
from activecall.sip_edge import metrics
from activecall.sip_edge.app.edge import EdgeOptions
from activecall.sip_edge.sip.syntax.message import make_response
from activecall.store import CallRecord, CallStore
from activecall.testing.media_responder import LegState, MediaResponder
from activecall.testing.redis_server import free_port
from activecall.testing.session_standins import SessionStandIns
from activecall.testing.sipp import Sipp, SippResult

CALLEE = "+15550004444"
BEAT_TTL = 2.0


@dataclass
class EdgeProcess:
    """``python -m activecall.sip_edge`` on a UDP port of the test, beating into the test's registry."""

    edge_id: str
    udp_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, settings: RedisSettings) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "active-call.toml"
        config.write_text(
            f'addr = "127.0.0.1"\nudp_port = {self.udp_port}\n'
            f'[redis]\nurl = "{settings.url}"\nprefix = "{settings.prefix}"\n'
            f"heartbeat_interval = 0.5\nheartbeat_ttl = {BEAT_TTL}\nreply_timeout = 2.0\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIVECALL_") and k != "REDIS_URL"}
        command = [sys.executable, "-m", "activecall.sip_edge", "--config", str(config)]
        command += ["--worker-id", self.edge_id, "--metrics-port", "0", "--drain-timeout", "20"]
        log = (self.folder / f"{self.edge_id}.log").open("ab")
        self.process = subprocess.Popen(command, stderr=log, env=env)

    def log_text(self) -> str:
        return (self.folder / f"{self.edge_id}.log").read_text(errors="replace")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Edges:
    settings: RedisSettings
    bus: Bus
    folder: Path
    started: list[EdgeProcess] = field(default_factory=list)

    async def start(self, edge_id: str, udp_port: int) -> EdgeProcess:
        """An edge process, once the registry shows it live."""
        edge = EdgeProcess(edge_id, udp_port, self.folder / edge_id)
        edge.start(self.settings)
        self.started.append(edge)

        async def live() -> bool:
            assert edge.process is not None
            assert edge.process.poll() is None, edge.log_text()[-3000:]
            workers = await list_workers(self.bus.redis, self.bus.keys, Role.SIP_EDGE, BEAT_TTL)
            return any(w.id == edge_id and w.pid == edge.process.pid for w in workers)

        await poll(live, within=60, every=0.1)
        return edge

    async def record(self, call_id: str) -> CallRecord | None:
        return await CallStore(self.bus.redis, self.bus.keys).get(call_id)

    async def events(self, call_id: str) -> list[Message]:
        entries = await self.bus.read({self.bus.keys.events(call_id): "0"}, count=1000)
        return [entry.message for entry in entries]

    async def answered_call(self, media: MediaResponder) -> LegState:
        """The leg of the one call, once the call is answered and its dialog kept."""
        leg = await poll(lambda: next(iter(media.legs.values()), None), within=30)
        keys = self.bus.keys

        async def kept() -> bool:
            record = await self.record(leg.call_id)
            stored = await self.bus.redis.exists(keys.dialog(leg.call_id))
            return bool(record and record.state == "answered" and stored)

        await poll(kept, within=30)
        return leg

    async def ended(self, call_id: str) -> CallRecord:
        async def final() -> CallRecord | None:
            record = await self.record(call_id)
            return record if record is not None and record.state == "ended" else None

        found: CallRecord = await poll(final, within=30)
        return found


@pytest.fixture
async def media(bus: Bus) -> AsyncIterator[MediaResponder]:
    responder = MediaResponder(bus, "media-test")
    await responder.start()
    stand_ins = await SessionStandIns(bus).start()  # the session roles' room, for admission
    yield responder
    await stand_ins.stop()
    await responder.stop()


@pytest.fixture
def edges_started(redis_settings: RedisSettings, bus: Bus, tmp_path: Path) -> Iterator[Edges]:
    edges = Edges(redis_settings, bus, tmp_path)
    try:
        yield edges
    finally:
        for edge in edges.started:
            edge.stop()


def udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def calling(
    port: int, scenario: str, tmp_path: Path, pause_ms: int | None = None
) -> asyncio.Task[SippResult]:
    """SIPp playing ``scenario`` against the edge on ``port``, in the background (a minute at most)."""
    sipp = Sipp(
        SCENARIOS / scenario,
        tmp_path / "sipp",
        remote=f"127.0.0.1:{port}",
        pause_ms=pause_ms,
        timeout_s=60,
        extra=["-s", CALLEE],
    )
    return asyncio.create_task(asyncio.to_thread(sipp.run))


async def test_after_a_kill_and_restart_the_callers_bye_is_answered_and_the_call_ends(
    edges_started: Edges, media: MediaResponder, bus: Bus, tmp_path: Path
) -> None:
    port = udp_port()
    doomed = await edges_started.start("edge-a", port)
    # SIPp waits 6 s after its ACK, then says BYE, sent again until answered.
    run = calling(port, "uac_call.xml", tmp_path, pause_ms=6000)
    leg = await edges_started.answered_call(media)
    doomed.kill()
    successor = await edges_started.start("edge-b", port)
    result = await run
    assert result.ok, result.describe() + successor.log_text()[-3000:]
    record = await edges_started.ended(leg.call_id)
    assert (record.edge, record.end_reason) == ("edge-b", "remote hangup")
    ended = [e for e in await edges_started.events(leg.call_id) if isinstance(e, CallEnded)]
    assert [(e.reason, e.by) for e in ended] == [("remote hangup", "remote")]
    assert not await bus.redis.smembers(bus.keys.calls_active())
    assert not await bus.redis.exists(bus.keys.dialog(leg.call_id))
    await poll(lambda: leg.closed)
    assert '"call adopted"' in successor.log_text()


async def test_a_lone_edge_sent_sigterm_leaves_its_call_to_its_successor(
    edges_started: Edges, media: MediaResponder, bus: Bus, tmp_path: Path
) -> None:
    port = udp_port()
    draining = await edges_started.start("edge-a", port)
    run = calling(port, "uac_call.xml", tmp_path, pause_ms=8000)  # any BYE of ours would break its script
    leg = await edges_started.answered_call(media)
    assert draining.process is not None
    draining.process.send_signal(signal.SIGTERM)
    returncode = await asyncio.to_thread(draining.process.wait, 15)  # well inside its 20 s drain
    assert returncode == 0, draining.log_text()[-3000:]
    assert '"draining: calls left to this edge\'s successor"' in draining.log_text()
    record = await edges_started.record(leg.call_id)
    assert record is not None and (record.state, record.edge) == ("answered", "edge-a")
    assert not leg.closed
    successor = await edges_started.start("edge-b", port)
    result = await run
    assert result.ok, result.describe() + successor.log_text()[-3000:]
    ended = await edges_started.ended(leg.call_id)
    assert (ended.edge, ended.end_reason) == ("edge-b", "remote hangup")
    await poll(lambda: leg.closed)


async def test_a_hangup_sent_after_the_restart_reaches_the_caller_as_a_bye(
    edges_started: Edges, media: MediaResponder, bus: Bus, tmp_path: Path
) -> None:
    port = udp_port()
    doomed = await edges_started.start("edge-a", port)
    run = calling(port, "uac_awaits_bye.xml", tmp_path)
    leg = await edges_started.answered_call(media)
    doomed.kill()
    # Restarted under the same id: whether the command comes before or after the adoption, it counts.
    successor = await edges_started.start("edge-a", port)
    await bus.publish(bus.keys.edge_control("edge-a"), Hangup(call_id=leg.call_id, reason="done", by="api"))
    result = await run
    assert result.ok, result.describe() + successor.log_text()[-3000:]
    record = await edges_started.ended(leg.call_id)
    assert record.end_reason == "done"
    ended = [e for e in await edges_started.events(leg.call_id) if isinstance(e, CallEnded)]
    assert [(e.reason, e.by) for e in ended] == [("done", "api")]
    assert not await bus.redis.smembers(bus.keys.calls_active())


async def test_a_hangup_sent_to_the_adopting_edge_reaches_the_caller(
    edges_started: Edges, media: MediaResponder, bus: Bus, tmp_path: Path
) -> None:
    port = udp_port()
    doomed = await edges_started.start("edge-a", port)
    run = calling(port, "uac_awaits_bye.xml", tmp_path)
    leg = await edges_started.answered_call(media)
    doomed.kill()
    killed_at = time.monotonic()
    await edges_started.start("edge-b", port)
    started_s = time.monotonic() - killed_at

    async def adopted() -> bool:
        record = await edges_started.record(leg.call_id)
        return record is not None and record.edge == "edge-b"

    await poll(adopted, within=30)
    print(f"\nkill -> successor live {started_s:.2f} s -> call adopted {time.monotonic() - killed_at:.2f} s")
    await bus.publish(bus.keys.edge_control("edge-b"), Hangup(call_id=leg.call_id, reason="done", by="api"))
    result = await run
    assert result.ok, result.describe()
    record = await edges_started.ended(leg.call_id)
    assert (record.edge, record.end_reason) == ("edge-b", "done")


async def test_a_second_edge_answers_the_dialog_requests_of_a_dead_first_one(
    edges_started: Edges, media: MediaResponder, bus: Bus
) -> None:
    first_port, second_port = udp_port(), udp_port()
    doomed = await edges_started.start("edge-a", first_port)
    await edges_started.start("edge-b", second_port)
    phone = await RawPhone.open(first_port, call_id="adopt-1@127.0.0.1")
    try:
        phone.invite()
        ok = await phone.final(within=15)
        assert ok.status == 200
        phone.ack()
        leg = await edges_started.answered_call(media)
        doomed.kill()
        phone.edge_port = second_port
        phone.send("OPTIONS")
        options = await phone.final(within=15)
        phone.send("BYE")
        bye = await phone.final(within=15)
    finally:
        phone.close()
    assert (options.status, options.cseq.method, bye.status, bye.cseq.method) == (200, "OPTIONS", 200, "BYE")
    record = await edges_started.ended(leg.call_id)
    assert (record.edge, record.end_reason) == ("edge-b", "remote hangup")
    assert not await bus.redis.smembers(bus.keys.calls_active())
    assert not await bus.redis.exists(bus.keys.sip_call("adopt-1@127.0.0.1"))


async def test_a_draining_edge_leaves_its_call_to_the_other_edge_which_takes_the_peer_along(
    edges_started: Edges, media: MediaResponder, bus: Bus
) -> None:
    first_port, second_port = udp_port(), udp_port()
    draining = await edges_started.start("edge-a", first_port)
    await edges_started.start("edge-b", second_port)
    phone = await RawPhone.open(first_port, call_id="drain-1@127.0.0.1")
    try:
        phone.invite()
        ok = await phone.final(within=15)
        assert ok.status == 200
        phone.ack()
        leg = await edges_started.answered_call(media)
        assert draining.process is not None
        draining.process.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(draining.process.wait, 30)
        record = await edges_started.record(leg.call_id)
        leg_closed_at_exit = leg.closed
        # The adopting edge's target refresh: a re-INVITE with our last description, its Contact.
        seen = []
        while not seen or getattr(seen[-1], "method", None) != "INVITE":
            seen.append(await phone.receive(within=15))
        refresh = seen[-1]
        answer = make_response(refresh, 200, to_tag=phone.to_tag)
        answer.headers.add("Contact", f"<sip:+14155550100@127.0.0.1:{phone.peer.port}>")
        answer.headers.add("Content-Type", "application/sdp")
        answer.body = AUDIO_OFFER.encode()
        phone.peer.send(bytes(answer), second_port)
        phone.edge_port = refresh.contacts[0].uri.port
        phone.send("BYE")
        bye = await phone.final(within=15)
    finally:
        phone.close()
    assert returncode == 0, draining.log_text()[-3000:]
    assert not [m for m in seen if getattr(m, "method", None) == "BYE"]
    assert record is not None and (record.state, record.edge) == ("answered", "edge-b")
    assert not leg_closed_at_exit  # the leg goes on with the successor, which closes it below
    assert refresh.body == ok.body  # the same description, version and all (RFC 3264 section 8)
    assert phone.edge_port == second_port
    assert bye.status == 200
    ended = await edges_started.ended(leg.call_id)
    assert (ended.edge, ended.end_reason) == ("edge-b", "remote hangup")
    await poll(lambda: leg.closed)
    assert '"call left to another edge"' in draining.log_text()


async def test_a_request_of_an_unknown_dialog_adopts_the_call_at_once(
    edges_started: Edges, start_edge: EdgeFactory, bus: Bus
) -> None:
    # The second edge runs here, with its sweep out of the way: only the BYE can make it adopt.
    second = await start_edge(edge_id="edge-b", options=EdgeOptions(adopt_sweep_s=3600))
    first_port = udp_port()
    doomed = await edges_started.start("edge-a", first_port)
    adopted = metrics.child(metrics.CALLS_ADOPTED, "request")
    before = adopted._value.get()
    phone = await RawPhone.open(first_port, call_id="adopt-2@127.0.0.1")
    try:
        phone.invite()
        assert (await phone.final(within=15)).status == 200
        phone.ack()
        leg = await edges_started.answered_call(second.responder)
        doomed.kill()
        phone.edge_port = second.port()
        phone.send("BYE")
        bye = await phone.final(within=25)  # the BYE waits for the first edge's beat to age
    finally:
        phone.close()
    assert bye.status == 200
    record = await edges_started.ended(leg.call_id)
    assert (record.edge, record.end_reason) == ("edge-b", "remote hangup")
    assert adopted._value.get() == before + 1
    await poll(lambda: leg.closed)
