"""Media worker benchmark: how many two-way SRTP G.711 calls one core holds, and what each part costs.

One media worker runs in its own process pinned to one core (``taskset``); this process, pinned to
another core with Redis, is the load: per call it opens a leg over the bus as the sip-edge does, then
sends 50 SRTP packets/s of speech-like audio (talk spurts and pauses, so VAD and barge-in work) and
receives the worker's 50 packets/s, and now and then puts an agent turn on ``audio:out`` as the tts
does. Packet arrival is timed by the kernel (SO_TIMESTAMPNS), so the load's own scheduling does not
blur the worker's send schedule; that is also why the load may read its sockets once per tick, and
why 25 calls may share one socket: the load must hold 400 calls on its core together with Redis.

The ramp adds calls level by level (then halves the step between the last pass and the first failure)
and prints the most calls held for ``--seconds`` with no packet lost either way and a p99 send-interval
jitter of at most 2 ms. After the ramp three lines say which side limited it: the worker's CPU per
call-second and the calls per core it implies (1000 / that), the share of its core the load generator
and Redis used, and whether the failing level saturated the worker's core, the load's core, or
neither (then other processes on a busy machine made the worker late). Then the worker's CPU per call
is measured with everything on, and again without SRTP, without VAD and without the bus (caller audio
and events not appended), so the share of each shows as a difference; the three parts alone; and the
worker's own work alone (its legs in one process on a simulated clock, without sockets, event loop or
Redis).

The cost runs include a bare relay, measured the same way in the same run, pinned to the worker's core
and loaded by the same load generator with the same calls: a process that holds one socket per call
and for each packet takes it in, unprotects it, protects it again with pylibsrtp and sends it back,
with uvloop and no other logic. What the worker costs next to it says more about the code than the
calls a busy machine happened to hold (the ramp's figure moved from 537 on a quiet day to 87 on a busy
one). The last line gives the medians of the interleaved runs::

    media: calls_per_core=N worker_ms_per_call_s=N relay_ms_per_call_s=N ratio=N

where ``calls_per_core`` is 1000 / ``worker_ms_per_call_s`` (the worker's CPU per call-second with
everything on, at the cost runs' calls), not the ramp's result, and ``ratio`` is worker / relay.
Run with ``make bench-media`` or::

    python bench/bench_media.py --seconds 60          # the full ramp
    python bench/bench_media.py --seconds 10 --max 300  # a quick look
    python bench/bench_media.py --cost-only --cost-calls 100 --cost-seconds 5 --cost-rounds 1  # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pylibsrtp
import uvloop

from activecall.bus import Bus
from activecall.config import Config, MediaSettings, RedisSettings
from activecall.media.g711 import PCMU
from activecall.media.metrics import STATS
from activecall.media.publisher import BusWriter
from activecall.media.rtp import is_rtcp
from activecall.media.srtp import (
    SrtpProfile,
    SrtpSession,
    format_sdes_inline,
    generate_key_salt,
    parse_sdes_inline,
)
from activecall.messages import Ack, AudioChunk, LegClose, LegOpen, LegOpened, LegUpdate, Message
from activecall.service import settle_collector
from activecall.testing.media import voiced
from activecall.testing.redis_server import RedisServer

SO_TIMESTAMPNS = 35  # Linux; the ancillary message carries a struct timespec
TIMESPEC = struct.Struct("qq")
RTP_HEADER = struct.Struct("!BBHII")
FRAME_S = 0.020
JITTER_BIN_S = 0.00005
JITTER_LIMIT_MS = 2.0
TURN_EVERY_S = 10.0
CALLS_PER_SOCKET = 25
SEND_SLOTS = 5  # the calls send in 5 groups, 4 ms apart
STALL_S = 0.025  # --diag lists the gaps between ticks longer than this
SATURATED_PERCENT = 85  # a core this busy leaves too little slack for a 20 ms tick to stay on time
RECEIVE_BUFFER = 1 << 20  # capped by net.core.rmem_max; 25 calls' 1,250 packets/s fill it in ~0.2 s
READ_COUNT = 200
RELAY = "relay"


def pin(core: int) -> None:
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {core})


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------- worker side


class NoVad:
    def is_speech(self, frame: object, sample_rate: int) -> bool:
        return False


async def serve_worker(args: argparse.Namespace) -> None:
    from activecall.media.worker import MediaWorker

    settings = RedisSettings(url=args.redis, prefix=args.prefix)
    config = Config(
        addr="127.0.0.1",
        rtp_start_port=args.port_base,
        rtp_end_port=args.port_base + 3999,
        redis=settings,
        media=MediaSettings(capacity=2000, port_block_size=2000),
    )
    bus = Bus.from_settings(settings)
    worker = MediaWorker(
        bus, config, args.worker_id, publish_audio=not args.no_bus, vad_factory=NoVad if args.no_vad else None
    )
    await worker.start()
    settle_collector()  # as MediaService does
    helpers = []
    if args.diag:
        helpers.append(asyncio.create_task(diagnose(worker)))
    if args.profile:
        helpers.append(asyncio.create_task(profile(args.profile)))
    key = f"{args.prefix}bench:stats"
    while True:
        stats = {
            "packets_in": STATS.packets_in,
            "packets_out": STATS.packets_out,
            "lost": STATS.jitter_lost,
            "late": STATS.jitter_late,
            "srtp_failures": sum(STATS.srtp_failures.values()),
            "srtp_kinds": dict(STATS.srtp_failures),
            "dropped": sum(STATS.dropped.values()),
            "barge_ins": STATS.barge_ins,
            "skipped": STATS.ticks_skipped,
            "legs": worker.load,
            "jitter_counts": STATS.send_jitter.counts,
        }
        await bus.redis.set(key, json.dumps(stats))
        await asyncio.sleep(0.25)


# ---------------------------------------------------------------------------------------------- bare relay


class RelayedCall(asyncio.DatagramProtocol):
    """One call of the bare relay: each SRTP packet unprotected, protected again, sent back."""

    def __init__(self, failures: list[int]) -> None:
        self.failures = failures
        self.transport: asyncio.DatagramTransport | None = None
        self.inbound: pylibsrtp.Session | None = None
        self.outbound: pylibsrtp.Session | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        inbound, outbound = self.inbound, self.outbound
        if inbound is None or outbound is None or self.transport is None:
            return
        try:
            self.transport.sendto(outbound.protect(inbound.unprotect(data)), addr)
        except pylibsrtp.Error:
            self.failures[0] += 1


def srtp_policy(key_salt: bytes, ssrc_type: int) -> pylibsrtp.Policy:
    return pylibsrtp.Policy(
        key=key_salt, ssrc_type=ssrc_type, srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    )


async def serve_relay(args: argparse.Namespace) -> None:
    """The bare relay: it answers leg.open, leg.update and leg.close as the worker does, so the same
    load drives it, and publishes the statistics the measurement reads (no losses of its own)."""
    settings = RedisSettings(url=args.redis, prefix=args.prefix)
    bus = Bus.from_settings(settings)
    control = bus.keys.media_control(args.worker_id)
    loop = asyncio.get_running_loop()
    calls: dict[str, tuple[RelayedCall, bytes]] = {}
    failures = [0]
    publisher = asyncio.create_task(publish_relay_stats(bus, f"{args.prefix}bench:stats", calls, failures))
    last_id = "0-0"
    try:
        while True:
            for entry in await bus.read({control: last_id}, count=READ_COUNT, block_ms=250):
                last_id = entry.id
                reply = await relay_control(loop, entry.message, args.worker_id, calls, failures)
                await bus.reply(getattr(entry.message, "reply_to", ""), reply)
    finally:
        publisher.cancel()


async def relay_control(
    loop: asyncio.AbstractEventLoop,
    message: Message,
    relay_id: str,
    calls: dict[str, tuple[RelayedCall, bytes]],
    failures: list[int],
) -> Message:
    if isinstance(message, LegOpen):
        key = generate_key_salt()
        transport, call = await loop.create_datagram_endpoint(
            lambda: RelayedCall(failures), local_addr=("127.0.0.1", 0)
        )
        call.outbound = pylibsrtp.Session(srtp_policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        calls[message.leg_id] = (call, key)
        port = transport.get_extra_info("sockname")[1]
        crypto = format_sdes_inline(key).removeprefix("inline:")
        return LegOpened(
            call_id=message.call_id,
            leg_id=message.leg_id,
            worker=relay_id,
            address="127.0.0.1",
            port=port,
            crypto_suite="AES_CM_128_HMAC_SHA1_80",
            crypto_key=crypto,
        )
    if isinstance(message, LegUpdate):
        call, _ = calls[message.leg_id]
        remote = parse_sdes_inline(message.remote_crypto_key)
        call.inbound = pylibsrtp.Session(srtp_policy(remote, pylibsrtp.Policy.SSRC_ANY_INBOUND))
    elif isinstance(message, LegClose):
        call, _ = calls.pop(message.leg_id)
        if call.transport is not None:
            call.transport.close()
    return Ack(call_id=message.call_id)


async def publish_relay_stats(
    bus: Bus, key: str, calls: dict[str, tuple[RelayedCall, bytes]], failures: list[int]
) -> None:
    empty_jitter = [0] * len(STATS.send_jitter.counts)
    while True:
        stats = {"lost": 0, "late": 0, "dropped": 0, "srtp_failures": failures[0], "srtp_kinds": {}}
        stats.update(legs=len(calls), jitter_counts=empty_jitter)
        await bus.redis.set(key, json.dumps(stats))
        await asyncio.sleep(0.25)


def ms_quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    picks = (ordered[len(ordered) // 2], ordered[int(0.99 * (len(ordered) - 1))], ordered[-1])
    return "/".join(f"{v * 1e3:.2f}" for v in picks)


async def profile(path: str) -> None:
    import cProfile

    await asyncio.sleep(8)
    profiler = cProfile.Profile()
    profiler.enable()
    await asyncio.sleep(10)
    profiler.disable()
    profiler.dump_stats(path)


async def diagnose(worker: object) -> None:
    """Every 5 s on stderr: tick durations, gaps between ticks and garbage-collector pauses."""
    durations: list[float] = []
    gaps: list[float] = []
    lateness: list[float] = []
    pauses: list[tuple[int, float]] = []
    last = [0.0]
    phases: dict[str, list[float]] = {"tx": [], "rx": [], "slow": [], "flush": [], "prepare": []}

    def timed_phase(name: str, run: Any) -> Any:
        def phase(*args: Any) -> Any:
            began = time.monotonic()
            try:
                return run(*args)
            finally:
                phases[name].append(time.monotonic() - began)

        return phase

    # The worker's own tick runs, its phases wrapped: a copy of the tick would miss later changes to it.
    phase_methods = (
        ("tx", "_tick_tx"),
        ("rx", "_tick_rx"),
        ("slow", "_tick_slow"),
        ("prepare", "_tick_prepare"),
    )
    for name, attribute in phase_methods:
        setattr(worker, attribute, timed_phase(name, getattr(worker, attribute)))
    writer = worker.writer  # type: ignore[attr-defined]
    writer.flush = timed_phase("flush", writer.flush)
    tick = worker.pacer.on_tick  # type: ignore[attr-defined]

    stalls: list[tuple[float, float]] = []
    last_cpu = [0.0]

    def timed(due: float, skipped: int) -> None:
        start, cpu = time.monotonic(), time.process_time()
        lateness.append(start - due)
        if last[0]:
            gaps.append(start - last[0])
            if start - last[0] > STALL_S:  # did the worker run through the gap, or was it kept off its core?
                stalls.append((start - last[0], cpu - last_cpu[0]))
        last[0], last_cpu[0] = start, cpu
        tick(due, skipped)
        durations.append(time.monotonic() - start)

    worker.pacer.on_tick = timed  # type: ignore[attr-defined]
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - gc_start[0]))

    gc.callbacks.append(on_gc)
    while True:
        await asyncio.sleep(5)
        if durations and gaps:
            run, gap = ms_quantiles(durations), ms_quantiles(gaps)
            gc_max = max((p for _, p in pauses), default=0) * 1e3
            runs = []
            for generation in (0, 1, 2):
                times = [p for g, p in pauses if g == generation]
                runs.append(f"gen{generation} {len(times)} max {max(times, default=0) * 1e3:.2f} ms")
            print(
                f"diag gc: {', '.join(runs)}",
                file=sys.stderr,
                flush=True,
            )
            phase = " ".join(f"{k} {ms_quantiles(v)}" for k, v in phases.items() if v)
            late = ms_quantiles(lateness)
            # A leg's send interval moves with the change in the tick's lateness and, for the legs
            # sent last, with the change in how long the sends before them took.
            steps = {
                name: ms_quantiles([abs(b - a) for a, b in zip(values, values[1:], strict=False)])
                for name, values in (("late", lateness), ("tx", phases["tx"]))
                if len(values) > 1
            }
            print(
                f"diag: {len(durations)} ticks; late p50/p99/max {late} ms; run {run} ms; gap {gap} ms;"
                f" gc {len(pauses)} runs, max {gc_max:.2f} ms; phases p50/p99/max {phase} ms;"
                f" tick-to-tick change p50/p99/max {' '.join(f'{k} {v}' for k, v in steps.items())} ms",
                file=sys.stderr,
                flush=True,
            )
        if stalls:
            listed = ", ".join(f"{gap * 1e3:.1f} ms with {cpu * 1e3:.1f} ms of CPU" for gap, cpu in stalls)
            print(
                f"diag stalls (gap between ticks, the worker's CPU in it): {listed}",
                file=sys.stderr,
                flush=True,
            )
            stalls.clear()
        durations.clear()
        gaps.clear()
        lateness.clear()
        pauses.clear()
        for durations_of_phase in phases.values():
            durations_of_phase.clear()


# ---------------------------------------------------------------------------------------------- load side


@dataclass
class Caller:
    call_id: str
    leg_id: str
    sock: socket.socket  # shared with the calls opened next to this one
    peer: tuple[str, int]  # the leg's RTP address on the worker
    session: SrtpSession | None
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    seq: int = field(default_factory=lambda: secrets.randbits(16))
    timestamp: int = field(default_factory=lambda: secrets.randbits(32))
    frame: int = 0  # position in the speech clip, in frames
    expected_seq: int | None = None
    last_arrival: float = 0.0
    lost: int = 0
    received: int = 0


class Load:
    """The far ends of the calls. ``CALLS_PER_SOCKET`` calls share a UDP socket (told apart by the
    worker's port each packet comes from), and the sockets are drained once per 20 ms tick rather than
    on every arrival: the kernel timestamps each packet as it arrives, so reading late changes no
    measurement, and the load is spared a wake-up per packet. Every packet is still SRTP-protected or
    verified on its own, so the load stays well below the worker's cost per call."""

    def __init__(self, bus: Bus, worker_id: str, srtp: bool, tts: bool, jitter_limit_ms: float) -> None:
        self.bus = bus
        self.jitter_limit_ms = jitter_limit_ms
        self.control = bus.keys.media_control(worker_id)
        self.srtp = srtp
        self.tts = tts
        self.calls: list[Caller] = []
        clip = np.concatenate(
            [voiced(1.5), np.zeros(8000 * 2, np.int16), voiced(1.0, f0=160), np.zeros(12000, np.int16)]
        )
        codes = PCMU.encode(clip)
        self.payloads = [codes[i : i + 160] for i in range(0, len(codes) - 159, 160)]
        self.sockets: list[socket.socket] = []
        self.by_peer: dict[tuple[str, int], Caller] = {}
        self.turn = voiced(2.0, f0=190.0).astype("<i2").tobytes()
        self.bins = [0] * int(0.05 / JITTER_BIN_S + 2)
        self.sent = 0
        self.open_ms: list[float] = []
        self.errors = 0
        self.send_late: list[float] = []
        self._publishing: set[asyncio.Task[None]] = set()

    async def open(self, count: int) -> None:
        for _ in range(count):
            await self._open_one()

    async def _open_one(self) -> None:
        call_id, leg_id = f"bench-{secrets.token_hex(4)}", f"leg-{secrets.token_hex(4)}"
        started = time.perf_counter()
        opened = await self.bus.request(self.control, LegOpen(call_id=call_id, leg_id=leg_id, srtp=self.srtp))
        self.open_ms.append((time.perf_counter() - started) * 1000)
        assert isinstance(opened, LegOpened) and not opened.error, opened
        sock = self._socket_for(len(self.calls))
        key = generate_key_salt()
        session = None
        update = LegUpdate(
            call_id=call_id,
            leg_id=leg_id,
            remote_address="127.0.0.1",
            remote_port=sock.getsockname()[1],
            codec="PCMU",
            telephone_event_pt=101,
        )
        if self.srtp:
            session = SrtpSession(
                SrtpProfile.AES_CM_128_HMAC_SHA1_80, key, parse_sdes_inline(opened.crypto_key)
            )
            update.remote_crypto_suite = "AES_CM_128_HMAC_SHA1_80"
            update.remote_crypto_key = format_sdes_inline(key)
        await self.bus.request(self.control, update)
        peer = (opened.address, opened.port)
        caller = Caller(call_id, leg_id, sock, peer, session, frame=secrets.randbelow(len(self.payloads)))
        self.calls.append(caller)
        self.by_peer[peer] = caller

    def _socket_for(self, index: int) -> socket.socket:
        """The socket of the index-th call: calls are closed last-opened first, so a socket's calls
        are always the ones from CALLS_PER_SOCKET * k on."""
        if index % CALLS_PER_SOCKET:
            return self.sockets[-1]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RECEIVE_BUFFER)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        self.sockets.append(sock)
        return sock

    async def close(self, count: int) -> None:
        for _ in range(count):
            caller = self.calls.pop()
            await self.bus.request(self.control, LegClose(call_id=caller.call_id, leg_id=caller.leg_id))
            del self.by_peer[caller.peer]
            if len(self.calls) % CALLS_PER_SOCKET == 0:
                self.sockets.pop().close()

    def _receive(self, sock: socket.socket) -> None:
        bins, last_bin, by_peer = self.bins, len(self.bins) - 1, self.by_peer
        while True:
            try:
                data, ancillary, _, addr = sock.recvmsg(512, 64)
            except BlockingIOError:
                return
            caller = by_peer.get(addr)
            if caller is None:
                continue  # a call closed a moment ago
            arrival = 0.0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanos = TIMESPEC.unpack(payload)
                    arrival = seconds + nanos * 1e-9
            if caller.session is not None and not is_rtcp(data):
                try:
                    data = caller.session.unprotect(data)
                except Exception:
                    self.errors += 1
                    continue
            if len(data) < 12 or is_rtcp(data):
                continue
            seq = (data[2] << 8) | data[3]
            if caller.expected_seq is not None and seq != caller.expected_seq:
                caller.lost += (seq - caller.expected_seq) & 0xFFFF
            caller.expected_seq = (seq + 1) & 0xFFFF
            caller.received += 1
            if caller.last_arrival:
                deviation = abs(arrival - caller.last_arrival - FRAME_S)
                bins[min(last_bin, int(deviation / JITTER_BIN_S))] += 1
            caller.last_arrival = arrival

    async def run(self, stop: asyncio.Event) -> None:
        """Send one packet per call every 20 ms on a monotonic schedule; agent turns now and then.

        Phones are not in step with one another: the calls send in SEND_SLOTS groups spread over the
        20 ms (each call always in its own slot), not in one burst the worker would have to take in
        while its own tick is due."""
        due = time.monotonic()
        tick = slot = 0
        turns_every = int(TURN_EVERY_S / FRAME_S)
        while not stop.is_set():
            due += FRAME_S / SEND_SLOTS
            delay = due - time.monotonic()
            await asyncio.sleep(max(0.0, delay))
            self.send_late.append(time.monotonic() - due)  # its own stalls send the calls in a burst
            for sock in self.sockets:
                self._receive(sock)
            self._send(self.calls[slot::SEND_SLOTS])
            slot = (slot + 1) % SEND_SLOTS
            if slot:
                continue
            tick += 1
            if self.tts and self.calls:
                # Published beside the sends, never awaited by them: Redis shares this core, and a slow
                # reply would hold back the next slots and make the calls send in a burst.
                publishing = asyncio.create_task(self._turns(tick, turns_every))
                self._publishing.add(publishing)
                publishing.add_done_callback(self._publishing.discard)

    def _send(self, calls: list[Caller]) -> None:
        """One SRTP packet per call: the next 20 ms of the clip under a fresh RTP header."""
        payloads, frames, pack = self.payloads, len(self.payloads), RTP_HEADER.pack
        for caller in calls:
            index = caller.frame
            caller.frame = index + 1 if index + 1 < frames else 0
            data = pack(0x80, 0, caller.seq, caller.timestamp, caller.ssrc) + payloads[index]
            if caller.session is not None:
                data = caller.session.protect(data)
            caller.seq = (caller.seq + 1) & 0xFFFF
            caller.timestamp = (caller.timestamp + 160) & 0xFFFFFFFF
            try:
                caller.sock.sendto(data, caller.peer)
                self.sent += 1
            except (BlockingIOError, ConnectionRefusedError):
                self.errors += 1

    async def _turns(self, tick: int, every: int) -> None:
        """A 2 s agent turn per call every TURN_EVERY_S, spread over the ticks, in 200 ms chunks."""
        batch = [c for i, c in enumerate(self.calls) if (tick + i * 7) % every == 0]
        if not batch:
            return
        items = []
        for caller in batch:
            turn_id = secrets.token_hex(4)
            for seq in range(10):
                pcm = self.turn[seq * 3200 : (seq + 1) * 3200]
                chunk = AudioChunk(call_id=caller.call_id, turn_id=turn_id, seq=seq, pcm=pcm, last=seq == 9)
                items.append((self.bus.keys.audio_out(caller.call_id), chunk))
        await self.bus.publish_many(items, maxlen=self.bus.settings.audio_maxlen)

    def reset_window(self) -> None:
        self.send_late = []
        self.bins = [0] * len(self.bins)
        for caller in self.calls:
            caller.lost = caller.received = 0
        self.errors = 0

    def p99_jitter(self) -> float:
        total = sum(self.bins)
        rank, running = 0.99 * total, 0
        for index, count in enumerate(self.bins):
            running += count
            if running >= rank:
                return (index + 1) * JITTER_BIN_S
        return 0.0


class WorkerProcess:
    """The media worker (or, with ``serve="--serve-relay"``, the bare relay) on the worker's core."""

    def __init__(
        self, args: argparse.Namespace, url: str, flags: list[str], serve: str = "--serve-worker"
    ) -> None:
        self.prefix = f"bm{secrets.token_hex(3)}:"
        self.worker_id = f"media-bench-{secrets.token_hex(2)}"
        command = [sys.executable, __file__, serve, "--redis", url, "--prefix", self.prefix]
        command += ["--worker-id", self.worker_id, "--port-base", str(args.port_base), *flags]
        if args.diag:
            command.append("--diag")
        if args.profile:
            command += ["--profile", args.profile]
        if (os.cpu_count() or 1) > 1:
            command = ["taskset", "-c", str(args.worker_core), *command]
        if args.nice:
            command = ["nice", "-n", str(args.nice), *command]
        self.process = subprocess.Popen(command)
        self.url = url

    async def stats(self, bus: Bus) -> dict[str, Any]:
        raw = await bus.redis.get(f"{self.prefix}bench:stats")
        result: dict[str, Any] = json.loads(raw) if raw else {}
        return result

    async def wait_ready(self, bus: Bus) -> None:
        for _ in range(200):
            if await self.stats(bus):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the media worker did not start")

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@dataclass
class Window:
    calls: int
    seconds: float
    lost_out: int  # worker -> load
    lost_in: int  # load -> worker (jitter buffer slots concealed for a missing packet)
    late_in: int
    srtp_failures: int
    p99_jitter_ms: float
    worker_p99_ms: float
    cpu: float
    load_cpu: float
    redis_cpu: float = 0.0
    srtp_kinds: dict[str, int] = field(default_factory=dict)
    jitter_limit_ms: float = JITTER_LIMIT_MS
    load_late_ms: tuple[float, float] = (0.0, 0.0)  # the load's send slots: p99.9 and most late

    @property
    def passed(self) -> bool:
        return (
            self.lost_out == 0
            and self.lost_in == 0
            and self.srtp_failures == 0
            and self.p99_jitter_ms <= self.jitter_limit_ms
        )

    @property
    def ms_per_call_second(self) -> float:
        return self.cpu / self.seconds / max(self.calls, 1) * 1000

    @property
    def calls_per_core(self) -> float:
        """The worker's calls on one core at this CPU per call-second (fixed costs spread thinner above)."""
        return 1000 / self.ms_per_call_second if self.cpu else 0.0

    @property
    def load_side_ms_per_call_second(self) -> float:
        """The load generator and Redis, which share the other core."""
        return (self.load_cpu + self.redis_cpu) / self.seconds / max(self.calls, 1) * 1000

    def share(self, cpu: float) -> float:
        return cpu / self.seconds * 100


def worker_p99(before: dict[str, Any], after: dict[str, Any]) -> float:
    counts = [int(b) - int(a) for a, b in zip(before["jitter_counts"], after["jitter_counts"], strict=True)]
    bounds = [*STATS.send_jitter.buckets, float("inf")]
    rank, running = 0.99 * sum(counts), 0
    for bound, count in zip(bounds, counts, strict=True):
        running += count
        if running >= rank and running:
            return bound * 1000
    return 0.0


async def measure(load: Load, worker: WorkerProcess, bus: Bus, calls: int, seconds: float) -> Window:
    if calls > len(load.calls):
        await load.open(calls - len(load.calls))
    elif calls < len(load.calls):
        await load.close(len(load.calls) - calls)
    await asyncio.sleep(2.0)  # let the jitter buffers settle
    redis0 = await redis_cpu(bus)
    before, cpu0, load0 = await worker.stats(bus), worker.cpu(), time.process_time()
    load.reset_window()
    await asyncio.sleep(seconds)
    load_late = sorted(load.send_late)
    after, cpu1, load1 = await worker.stats(bus), worker.cpu(), time.process_time()
    redis1 = await redis_cpu(bus)

    def delta(key: str) -> int:
        return int(after[key]) - int(before[key])

    return Window(
        calls=calls,
        seconds=seconds,
        lost_out=sum(c.lost for c in load.calls) + load.errors,
        lost_in=delta("lost") + delta("dropped"),
        late_in=delta("late"),
        srtp_failures=delta("srtp_failures"),
        p99_jitter_ms=load.p99_jitter() * 1000,
        worker_p99_ms=worker_p99(before, after),
        cpu=cpu1 - cpu0,
        load_cpu=load1 - load0,
        redis_cpu=redis1 - redis0,
        srtp_kinds={k: v - before["srtp_kinds"].get(k, 0) for k, v in after["srtp_kinds"].items() if v},
        jitter_limit_ms=load.jitter_limit_ms,
        load_late_ms=(load_late[int(0.999 * (len(load_late) - 1))] * 1000, load_late[-1] * 1000)
        if load_late
        else (0.0, 0.0),
    )


async def redis_cpu(bus: Bus) -> float:
    """CPU seconds Redis has used (INFO cpu), so its share of the load's core shows."""
    info = await bus.redis.info("cpu")
    return float(info.get("used_cpu_sys", 0.0)) + float(info.get("used_cpu_user", 0.0))


HEADER = (
    "calls worker ms/call-s calls/core lost-out  lost-in   late  srtp p99-jit  wrk-p99   load  redis  result"
)


def show(window: Window) -> None:
    print(
        f"{window.calls:6d} {window.share(window.cpu):5.1f}% {window.ms_per_call_second:8.3f}"
        f" {window.calls_per_core:10.0f}"
        f" {window.lost_out:8d} {window.lost_in:8d} {window.late_in:6d} {window.srtp_failures:5d}"
        f" {window.p99_jitter_ms:8.2f} {window.worker_p99_ms:8.2f}"
        f" {window.share(window.load_cpu):5.1f}% {window.share(window.redis_cpu):5.1f}%"
        f"  {'ok' if window.passed else 'FAIL'}"
        + (f" srtp failures {window.srtp_kinds}" if window.srtp_failures else ""),
        flush=True,
    )


async def ramp(args: argparse.Namespace, url: str) -> int:
    worker = WorkerProcess(args, url, [])
    bus = Bus.from_settings(RedisSettings(url=url, prefix=worker.prefix, reply_timeout=5.0))
    stop = asyncio.Event()
    try:
        await worker.wait_ready(bus)
        load = Load(bus, worker.worker_id, srtp=True, tts=not args.no_tts, jitter_limit_ms=args.jitter_limit)
        settle_collector()  # the load's own collections would stall its sends, as the worker's would
        sender = asyncio.create_task(load.run(stop))
        print(
            f"ramp: {args.seconds:.0f} s per level; pass = no packet lost either way,"
            f" p99 send jitter <= {args.jitter_limit:g} ms\n"
            f"{HEADER}\n(worker, load: share of their cores; calls/core = 1000 / the worker's ms/call-s;"
            " redis runs on the load's core)",
            flush=True,
        )
        windows: list[Window] = []
        best, failed_at, level = 0, 0, args.start
        while level <= args.max and not failed_at:
            windows.append(window := await measure(load, worker, bus, level, args.seconds))
            show(window)
            best, failed_at = (level, 0) if window.passed else (best, level)
            level += args.step
        step = args.step // 2
        while failed_at and step >= args.min_step and failed_at - best > step:
            level = best + step
            windows.append(window := await measure(load, worker, bus, level, args.seconds))
            show(window)
            best, failed_at = (level, failed_at) if window.passed else (best, level)
            step //= 2
        opens = sorted(load.open_ms)
        if opens:
            print(
                f"leg.open round trip over the bus: p50 {opens[len(opens) // 2]:.2f} ms, "
                f"p99 {opens[int(0.99 * (len(opens) - 1))]:.2f} ms ({len(opens)} legs)"
            )
        print(f"most calls held for {args.seconds:.0f} s on one core: {best}", flush=True)
        summarise(windows, failed_at)
        stop.set()
        await sender
        await load.close(len(load.calls))
        return best
    finally:
        stop.set()
        worker.stop()
        await bus.close()


def summarise(windows: list[Window], failed_at: int) -> None:
    """Which side limited the ramp: the worker's core, the load's core (load generator and Redis), or
    neither (then the failures came from scheduling: other processes on a busy machine)."""
    if not windows:
        return
    largest = max(windows, key=lambda w: w.calls)
    print(
        f"worker: {largest.ms_per_call_second:.3f} ms CPU per call-second at {largest.calls} calls"
        f" -> about {largest.calls_per_core:.0f} calls per core"
    )
    load_ms = largest.load_side_ms_per_call_second
    print(
        f"load generator: {largest.share(largest.load_cpu):.0f}% of its core and Redis"
        f" {largest.share(largest.redis_cpu):.0f}% at {largest.calls} calls"
        f" ({load_ms:.3f} ms per call-second together)"
        f" -> its core would carry about {1000 / load_ms if load_ms else 0:.0f} calls"
    )
    failed = [w for w in windows if w.calls == failed_at and not w.passed]
    if not failed:
        print("limited by: the --max level (nothing failed)")
        return
    window = failed[0]
    worker_busy = window.share(window.cpu)
    load_busy = window.share(window.load_cpu + window.redis_cpu)
    if worker_busy >= SATURATED_PERCENT:
        verdict = f"the worker (its core {worker_busy:.0f}% busy at {window.calls} calls)"
    elif load_busy >= SATURATED_PERCENT:
        verdict = f"the load generator's core (load and Redis {load_busy:.0f}% busy at {window.calls} calls)"
    else:
        verdict = (
            f"neither core was saturated at {window.calls} calls (worker {worker_busy:.0f}%, load and Redis"
            f" {load_busy:.0f}%; worker p99 send jitter {window.worker_p99_ms:.1f} ms): other processes"
            f" took the cores (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)"
        )
    p999, most = window.load_late_ms
    verdict += f"; the load's send slots were late by {p999:.1f} ms at p99.9, {most:.1f} ms at most"
    print(f"limited by: {verdict}", flush=True)


Variant = tuple[list[str], bool, str]  # the process's flags, SRTP, and which process


async def cost_window(args: argparse.Namespace, url: str, calls: int, variant: Variant) -> float:
    """Worker (or relay) CPU in ms per call-second for one variant."""
    flags, srtp, serve = variant
    worker = WorkerProcess(args, url, flags, serve)
    bus = Bus.from_settings(RedisSettings(url=url, prefix=worker.prefix, reply_timeout=5.0))
    stop = asyncio.Event()
    try:
        await worker.wait_ready(bus)
        load = Load(bus, worker.worker_id, srtp=srtp, tts=not args.no_tts, jitter_limit_ms=args.jitter_limit)
        sender = asyncio.create_task(load.run(stop))
        window = await measure(load, worker, bus, calls, args.cost_seconds)
        stop.set()
        await sender
        await load.close(len(load.calls))
        return window.ms_per_call_second
    finally:
        stop.set()
        worker.stop()
        await bus.close()


ALL_ON: Variant = ([], True, "--serve-worker")
BARE_RELAY: Variant = ([], True, "--serve-relay")


async def medians(
    args: argparse.Namespace, url: str, calls: int, variants: dict[str, Variant]
) -> dict[str, float]:
    """Each variant ``--cost-rounds`` times, interleaved so that a busy spell falls on all of them, and
    the median kept."""
    runs: dict[str, list[float]] = {name: [] for name in variants}
    print(f"cost: {calls} calls, {args.cost_seconds:.0f} s a run, {args.cost_rounds} rounds", flush=True)
    for _ in range(args.cost_rounds):
        for name, variant in variants.items():
            runs[name].append(await cost_window(args, url, calls, variant))
    results = {name: sorted(values)[len(values) // 2] for name, values in runs.items()}
    for name, values in runs.items():
        shown = " ".join(f"{v:.3f}" for v in values)
        print(f"  {name:8s} {results[name]:.3f} ms CPU per call-second (runs: {shown})", flush=True)
    return results


async def cost(args: argparse.Namespace, url: str, calls: int) -> dict[str, float]:
    """Worker CPU per call-second with everything on, then without SRTP, VAD, the bus (the shares are
    differences of totals), and the bare relay's."""
    variants = {"all on": ALL_ON, "no SRTP": ([], False, "--serve-worker")}
    variants["no VAD"] = (["--no-vad"], True, "--serve-worker")
    variants["no bus"] = (["--no-bus"], True, "--serve-worker")
    variants[RELAY] = BARE_RELAY
    results = await medians(args, url, calls, variants)
    total = results["all on"]
    print(f"  all on: about {1000 / total:.0f} calls per core at {calls} calls")
    for part, variant in (("SRTP", "no SRTP"), ("VAD", "no VAD"), ("bus", "no bus")):
        share = total - results[variant]
        print(f"  {part:5s} {share:+.3f} ms per call-second in context ({share / total * 100:+.0f}%)")
    isolated()
    in_process = pipeline(calls)
    print(
        f"the worker's own work for {calls} calls in one process, without sockets, event loop or Redis:"
        f" {in_process:.3f} ms CPU per call-second ({in_process / total * 100:.0f}% of the in-context"
        " figure; the rest is the UDP and Redis system calls, the event loop and the caches they share)",
        flush=True,
    )
    return results


def capacity_line(worker_ms: float, relay_ms: float) -> str:
    """The bench's last line: the worker's capacity and its cost next to the bare relay's."""
    calls_per_core = round(1000 / worker_ms) if worker_ms else 0
    ratio = worker_ms / relay_ms if relay_ms else 0.0
    return (
        f"media: calls_per_core={calls_per_core} worker_ms_per_call_s={worker_ms:.3f}"
        f" relay_ms_per_call_s={relay_ms:.3f} ratio={ratio:.2f}"
    )


class _SimulatedClock:
    """Stands in for the ``time`` module of the leg, its two halves and its RTCP reports: the monotonic
    clock moves 20 ms per simulated tick, so the jitter buffer sees the timing of a real call."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    @staticmethod
    def time() -> float:
        return time.time()


class _NoSocket:
    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        pass

    def close(self) -> None:
        pass


class _DroppingWriter(BusWriter):
    """Packs and queues every XADD as the worker's writer does; its tick's write drops them."""

    def flush(self) -> None:
        self._items.clear()


def pipeline(legs: int, ticks: int = 250) -> float:
    """The worker's work per call alone: ``legs`` SRTP legs of a worker that is never started, each
    given one SRTP packet of the load's clip per tick, then the worker's own tick (send, jitter buffer,
    decode, VAD, the audio:in XADD packed and queued), with the sockets and Redis left out. CPU ms per
    call-second, the best of three thirds of the run."""
    import activecall.media.leg as leg_module
    import activecall.media.receiver as receiver_module
    import activecall.media.reports as reports_module
    import activecall.media.sender as sender_module
    import activecall.media.worker as worker_module
    from activecall.media.leg import Leg
    from activecall.media.ports import BoundPair
    from activecall.media.vad import WebRtcVad

    clock = _SimulatedClock()
    modules = (leg_module, receiver_module, sender_module, reports_module, worker_module)
    saved = [module.time for module in modules]
    for module in modules:
        module.time = clock  # type: ignore[attr-defined]
    unused = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        bus = Bus.from_settings(RedisSettings(url="redis://127.0.0.1:1/0"))  # never connected
        worker = worker_module.MediaWorker(bus, Config(), "bench")
        worker.writer = _DroppingWriter(bus)
        clip = np.concatenate([voiced(1.5), np.zeros(16000, np.int16), voiced(1.0, f0=160)])
        codes = PCMU.encode(clip)
        payloads = [codes[i : i + 160] for i in range(0, len(codes) - 159, 160)]
        calls: list[tuple[Leg, list[bytes]]] = []
        for n in range(legs):
            ports = BoundPair(20000 + 2 * n, 20001 + 2 * n, unused, None)
            leg = Leg(
                call_id=f"call-{n}",
                leg_id=f"leg-{n}",
                ports=ports,
                srtp=True,
                rtcp_mux=False,
                settings=worker.settings,
                sink=worker.writer,
                vad=WebRtcVad(2),
                cname=f"bench/{n}",
            )
            leg.attach(_NoSocket(), _NoSocket())  # type: ignore[arg-type]
            remote = generate_key_salt()
            leg.update(
                LegUpdate(
                    call_id=leg.call_id,
                    leg_id=leg.leg_id,
                    remote_address="127.0.0.1",
                    remote_port=30000 + n,
                    codec="PCMU",
                    payload_type=0,
                    telephone_event_pt=101,
                    remote_crypto_suite="AES_CM_128_HMAC_SHA1_80",
                    remote_crypto_key=format_sdes_inline(remote).removeprefix("inline:"),
                )
            )
            far_end = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, remote, leg.local_key)
            packets = [
                far_end.protect(RTP_HEADER.pack(0x80, 0, t, t * 160, n) + payloads[(t + n) % len(payloads)])
                for t in range(ticks)
            ]
            worker.legs[leg.leg_id] = leg
            calls.append((leg, packets))

        def run(first: int, last: int) -> float:
            start = time.process_time()
            for t in range(first, last):
                due = clock.now = 1000.0 + t * FRAME_S
                for n, (leg, packets) in enumerate(calls):
                    leg.receiver.on_rtp(packets[t], ("127.0.0.1", 30000 + n))
                clock.now = due + 0.001
                worker._on_tick(clock.now, 0)
            return time.process_time() - start

        settle_collector()  # as the worker does
        warm = ticks // 4
        run(0, warm)
        third = (ticks - warm) // 3
        best = min(run(warm + k * third, warm + (k + 1) * third) for k in range(3))
        return best / third / legs / FRAME_S * 1000
    finally:
        unused.close()
        for module, original in zip(modules, saved, strict=True):
            module.time = original  # type: ignore[attr-defined]


def isolated() -> None:
    """The same three parts alone, on this process's core: the per-frame work times 50 frames/s."""
    from activecall.media.publisher import AudioCommand
    from activecall.media.receiver import _RememberingVad
    from activecall.media.vad import SpeechDetector, WebRtcVad

    key = generate_key_salt()
    sender = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, key, key)
    receiver = SrtpSession(SrtpProfile.AES_CM_128_HMAC_SHA1_80, key, key)
    frames = list(np.split(voiced(4.0), 200))
    payloads = [PCMU.encode(f) for f in frames]
    count = 20_000

    def per_second(run: object) -> float:
        start = time.process_time()
        run()  # type: ignore[operator]
        return (time.process_time() - start) / count * 50 * 1000

    def srtp() -> None:
        for i in range(count):
            packet = RTP_HEADER.pack(0x80, 0, i & 0xFFFF, i * 160, 7) + payloads[i % 200]
            receiver.unprotect(sender.protect(packet))

    detector = SpeechDetector(_RememberingVad(WebRtcVad(2)), 8000, start_ms=60, stop_ms=500)

    def vad() -> None:
        for i in range(count):
            detector.process(frames[i % 200])

    def bus() -> None:
        command = AudioCommand("ac:call:{call-1}:audio:in", b"3000", "call-1", 8000)
        pcm = [frame.tobytes() for frame in frames]
        for i in range(count):
            command.pack(pcm[i % 200], i, i * 20, time.time())

    print(
        f"isolated, ms CPU per call-second: SRTP (protect + unprotect) {per_second(srtp):.3f},"
        f" VAD {per_second(vad):.3f}, bus frame encoding and packing {per_second(bus):.3f}"
        " (the bus's socket I/O is only in the in-context figure)",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> None:
    url = os.environ.get("REDIS_URL")
    server = None
    pin(args.load_core)  # Redis started below shares the load's core, the worker has its own
    if not url:
        server = RedisServer().start()
        url = server.url
    try:
        best = await ramp(args, url) if not args.cost_only else 0
        calls = args.cost_calls or max(50, min(200, best // 2))
        if args.no_cost:
            results = await medians(args, url, calls, {"all on": ALL_ON, RELAY: BARE_RELAY})
        else:
            results = await cost(args, url, calls)
    finally:
        if server is not None:
            server.stop()
    print(capacity_line(results["all on"], results[RELAY]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each level must hold")
    parser.add_argument("--start", type=int, default=50)
    parser.add_argument("--step", type=int, default=50)
    parser.add_argument("--min-step", type=int, default=12)
    parser.add_argument("--max", type=int, default=1000)
    parser.add_argument("--jitter-limit", type=float, default=JITTER_LIMIT_MS, help="p99 send jitter, ms")
    parser.add_argument(
        "--cost-calls", type=int, default=0, help="calls for the cost runs (0: half the best)"
    )
    parser.add_argument("--cost-seconds", type=float, default=10.0)
    parser.add_argument("--cost-rounds", type=int, default=3)
    parser.add_argument("--cost-only", action="store_true")
    parser.add_argument(
        "--no-cost", action="store_true", help="of the cost runs, only the worker and the bare relay"
    )
    parser.add_argument("--no-tts", action="store_true", help="no agent turns on audio:out")
    parser.add_argument("--worker-core", type=int, default=0)
    parser.add_argument(
        "--nice",
        type=int,
        default=-10 if os.geteuid() == 0 else 0,
        help="the worker's nice value (default -10 as root: on a shared machine the pinned core is then"
        " the worker's, as a dedicated media host's would be)",
    )
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--port-base", type=int, default=16000, help="below the ephemeral range")
    # The worker process is this script again:
    parser.add_argument("--serve-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-relay", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", help=argparse.SUPPRESS)
    parser.add_argument("--no-vad", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-bus", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--diag", action="store_true", help="the worker prints tick and GC timings")
    parser.add_argument("--profile", default="", help="the worker writes a cProfile of 10 s to this file")
    args = parser.parse_args()
    if args.serve_relay:
        uvloop.run(serve_relay(args))
    elif args.serve_worker:
        uvloop.run(serve_worker(args))
    else:
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
