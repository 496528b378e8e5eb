"""The media worker: control requests, the legs, one pacing clock and one bus writer for all of them.

One reader follows ``media:{worker}:control`` together with the ``audio:out`` stream of every call
it holds, in a single blocking XREAD: a control entry wakes it at once (a leg opens in well under a
millisecond on loopback), and each new leg's ``audio:out`` joins the next read. Control entries of
a read are handled before its audio, so a stop overtakes the chunks it stops.

A leg opened with ``takeover`` replaces one on a worker that was lost or drains: at its first update
it picks up the call's audio where the caller left it (:mod:`activecall.media.takeover`) and only
then joins ``audio:out``. Draining (SIGTERM) refuses new legs and waits until the edges have moved
the calls away (they see ``draining`` in this worker's heartbeat) or the drain timeout ends it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
import wave
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import numpy as np

from activecall.bus import REDIS_DOWN, Backoff, Bus, Entry, as_str
from activecall.config import Config
from activecall.contract import EndReason
from activecall.media.leg import Leg, LegError
from activecall.media.metrics import LEGS_ACTIVE, LEGS_ORPHANED, STATS
from activecall.media.orphans import MEDIA_TIMEOUT, LegWatch
from activecall.media.ports import PortError, PortLease, PortPool, blocks_of
from activecall.media.publisher import BusWriter
from activecall.media.receiver import LegReceiver, RtpProtocol, Slot, decode_slots
from activecall.media.scheduler import Pacer
from activecall.media.srtp import SrtpKeyError, format_sdes_inline, parse_sdes_inline
from activecall.media.takeover import ShiftedSink, pick_up, restore
from activecall.media.vad import Vad, WebRtcVad
from activecall.messages import (
    Ack,
    AudioChunk,
    BargeInPolicy,
    LegClose,
    LegOpen,
    LegOpened,
    LegUpdate,
    Message,
    PlayAudio,
    ResumePlayback,
    SendDtmf,
    StartRecording,
    StopPlayback,
)

log = logging.getLogger("activecall.media.worker")

SLOW_TICK_EVERY: Final = 10  # housekeeping every 200 ms
READ_BLOCK_MS: Final = 250  # also how long a stop may wait for the read in flight
READ_COUNT: Final = 200
SDES_SUITE: Final = "AES_CM_128_HMAC_SHA1_80"
_WILDCARDS: Final = ("", "0.0.0.0", "::")


def advertised_address(config: Config) -> str:
    """The address put in LegOpened (and so in the SDP): external_ip, else the bind address."""
    if config.external_ip:
        return config.external_ip
    if config.addr not in _WILDCARDS:
        return config.addr
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class MediaWorker:
    def __init__(
        self,
        bus: Bus,
        config: Config,
        worker_id: str,
        *,
        host: str | None = None,
        publish_audio: bool = True,
        vad_factory: Callable[[], Vad] | None = None,
    ) -> None:
        settings = config.media
        if settings.vad != "webrtc" and vad_factory is None:
            raise ValueError(f'media.vad = "{settings.vad}" is not available in this build; use "webrtc"')
        self.bus = bus
        self.config = config
        self.settings = settings
        self.worker_id = worker_id
        self.address = advertised_address(config)
        self.host = host or socket.gethostname()
        blocks = blocks_of(config.rtp_start_port, config.rtp_end_port, settings.port_block_size)
        self.lease = PortLease(bus.redis, bus.keys, self.host, worker_id, blocks, config.redis.heartbeat_ttl)
        self.pool = PortPool(self.lease, config.addr)
        self.writer = BusWriter(bus, publish_audio=publish_audio)
        self.pacer = Pacer(self._on_tick)
        self.vad_factory = vad_factory or (lambda: WebRtcVad(settings.vad_aggressiveness))
        self.legs: dict[str, Leg] = {}
        self.by_call: dict[str, Leg] = {}
        self.audio_cursor: dict[str, str] = {}  # audio:out stream -> last entry id handled
        self._stream_call: dict[str, str] = {}  # audio:out stream -> call id
        # Takeover legs not updated yet: until when the caller heard the old leg, and their sink.
        self._takeovers: dict[str, tuple[float, ShiftedSink]] = {}
        self.control_key = bus.keys.media_control(worker_id)
        self.control_id = "0-0"
        self.draining = False
        self._idle = asyncio.Event()  # set whenever a leg closes
        self._stopping = False
        self._ticks = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.watch = LegWatch(bus, config, worker_id)

    @property
    def load(self) -> int:
        return len(self.legs)

    @property
    def capacity(self) -> int:
        return self.settings.capacity

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.pool.start()
        self.control_id = await self._last_id(self.control_key)
        self.pacer.start()
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="media-reader"),
            asyncio.create_task(self._renew_loop(), name="media-port-lease"),
            asyncio.create_task(self._orphan_loop(), name="media-orphans"),
        ]
        log.info("media worker started", extra={"address": self.address, "blocks": len(self.lease.held)})

    async def drain(self) -> None:
        self.draining = True
        if self.legs:
            log.info("draining: waiting for the edges to move the calls", extra={"legs": len(self.legs)})
        while self.legs:
            self._idle.clear()
            await self._idle.wait()

    async def stop(self) -> None:
        self._stopping = True
        await self.pacer.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        for leg_id in list(self.legs):
            self._close_leg(leg_id)
        await self.writer.close()
        try:
            await self.lease.release()
            await self.watch.forget()
        except REDIS_DOWN:
            pass

    async def _last_id(self, stream: str) -> str:
        newest = await self.bus.redis.xrevrange(stream, count=1)
        return as_str(newest[0][0]) if newest else "0-0"

    # ------------------------------------------------------------------ the pacing tick

    def _on_tick(self, due: float, skipped: int) -> None:
        legs = self.legs.values()
        if skipped:
            STATS.ticks_skipped += skipped
            for leg in legs:
                leg.sender.skip(skipped)
        self._tick_tx(legs)
        now = time.monotonic()
        self._tick_rx(legs, now)
        self._ticks += 1
        if self._ticks % SLOW_TICK_EVERY == 0:
            self._tick_slow(legs, now)
        self._tick_prepare(legs)
        self.writer.flush()

    @staticmethod
    def _tick_tx(legs: Iterable[Leg]) -> None:
        """The packets prepared at the end of the tick before, sent first thing."""
        for leg in legs:
            try:
                leg.sender.tick_tx()
            except Exception:
                log.exception("send tick failed", extra={"leg": leg.leg_id})

    @staticmethod
    def _tick_prepare(legs: Iterable[Leg]) -> None:
        """The next tick's packets, built and protected after this tick's caller audio."""
        for leg in legs:
            try:
                leg.sender.prepare_tx()
            except Exception:
                log.exception("preparing the next packet failed", extra={"leg": leg.leg_id})

    @staticmethod
    def _tick_rx(legs: Iterable[Leg], now: float) -> None:
        """Every leg's due slots, their audio decoded together, then played leg by leg."""
        legs_due: list[Leg] = []
        due: list[tuple[LegReceiver, list[Slot]]] = []
        for leg in legs:
            try:
                slots = leg.receiver.due_slots(now)
            except Exception:
                log.exception("receive tick failed", extra={"leg": leg.leg_id})
                continue
            legs_due.append(leg)
            due.append((leg.receiver, slots))
        try:
            decode_slots(due)
        except Exception:
            log.exception("decoding a tick's caller audio failed")
        for leg, (_, slots) in zip(legs_due, due, strict=True):
            try:
                leg.play_slots(now, slots)
            except Exception:
                log.exception("receive tick failed", extra={"leg": leg.leg_id})

    def _tick_slow(self, legs: Iterable[Leg], now: float) -> None:
        orphans: list[Leg] = []
        for leg in legs:
            try:
                leg.tick_slow(now)
            except Exception:
                log.exception("housekeeping tick failed", extra={"leg": leg.leg_id})
            if leg.orphaned(now):
                orphans.append(leg)
        for leg in orphans:
            grace = self.settings.orphan_grace
            self._close_orphan(leg, MEDIA_TIMEOUT, f"media.timeout unanswered by any edge for {grace:g} s")

    # ------------------------------------------------------------------ the bus reader

    async def _read_loop(self) -> None:
        backoff = Backoff()
        while not self._stopping:
            try:
                await self._read_once()
            except REDIS_DOWN as exc:
                if self._stopping:
                    return  # redis-py turns the cancellation of a blocked read into a connection error
                log.warning("bus read failed; retrying", extra={"error": str(exc)})
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()

    async def _read_once(self) -> None:
        streams = {self.control_key: self.control_id, **self.audio_cursor}
        entries = await self.bus.read(streams, count=READ_COUNT, block_ms=READ_BLOCK_MS)
        for entry in entries:
            if entry.stream == self.control_key:
                self.control_id = entry.id
                await self._on_control(entry.message)
        for entry in entries:
            if entry.stream != self.control_key:
                self._on_audio(entry)

    def _on_audio(self, entry: Entry) -> None:
        if entry.stream not in self.audio_cursor:
            return  # the leg closed while this read was on its way
        self.audio_cursor[entry.stream] = entry.id
        chunk = entry.message
        leg = self.by_call.get(self._stream_call[entry.stream])
        if isinstance(chunk, AudioChunk) and leg is not None:
            start_at = leg.start_at(chunk.not_before_ms, time.monotonic()) if chunk.not_before_ms else 0.0
            leg.playout.add_chunk(
                chunk.turn_id,
                chunk.seq,
                chunk.pcm,
                chunk.sample_rate,
                chunk.last,
                chunk.interruptible,
                start_at=start_at,
            )

    async def _on_control(self, message: Message) -> None:
        try:
            if isinstance(message, LegOpen):
                await self._reply(message.reply_to, await self._open(message))
            elif isinstance(message, LegUpdate):
                await self._reply(message.reply_to, await self._update(message))
            elif isinstance(message, LegClose):
                self._close_leg(message.leg_id)
                await self._reply(message.reply_to, Ack(call_id=message.call_id))
            else:
                self._call_command(message)
        except REDIS_DOWN:
            raise
        except Exception as exc:
            log.exception("control message failed", extra={"type": message.TYPE})
            reply_to = getattr(message, "reply_to", "")
            if isinstance(message, LegOpen):
                await self._reply(reply_to, self._refusal(message, f"internal error: {exc}"))
            else:
                await self._reply(reply_to, Ack(call_id=message.call_id, ok=False, error=str(exc)))

    async def _reply(self, reply_to: str, message: Message) -> None:
        if reply_to:
            await self.bus.reply(reply_to, message)

    # ------------------------------------------------------------------ leg.open / leg.update / leg.close

    async def _open(self, msg: LegOpen) -> LegOpened:
        existing = self.legs.get(msg.leg_id)
        if existing is not None:  # the request was redelivered: the same answer again
            return self._opened(existing)
        if self.draining:
            return self._refusal(msg, "draining")
        if len(self.legs) >= self.capacity:
            return self._refusal(msg, "at capacity")
        try:
            kept_key = parse_sdes_inline(msg.crypto_key) if msg.srtp and msg.crypto_key else b""
        except SrtpKeyError as exc:
            return self._refusal(msg, str(exc))
        try:
            bound = self.pool.bind_now(msg.rtcp_mux) or await self.pool.bind(msg.rtcp_mux)
        except PortError as exc:
            return self._refusal(msg, str(exc))
        shifted = ShiftedSink(self.writer) if msg.takeover else None
        leg = Leg(
            call_id=msg.call_id,
            leg_id=msg.leg_id,
            ports=bound,
            srtp=msg.srtp,
            rtcp_mux=msg.rtcp_mux,
            settings=self.settings,
            sink=shifted or self.writer,
            vad=self.vad_factory(),
            cname=f"{self.worker_id}/{msg.leg_id}",
            speech_stop_ms=self.settings.speech_stop_ms,
        )
        if kept_key:
            leg.local_key = kept_key  # the predecessor's key, for a peer that cannot re-key
        loop = asyncio.get_running_loop()
        run_if_due = self.pacer.run_if_due
        rtp, _ = await loop.create_datagram_endpoint(
            lambda: RtpProtocol(leg.receiver, False, run_if_due), sock=bound.rtp
        )
        rtcp = None
        if bound.rtcp is not None:
            rtcp, _ = await loop.create_datagram_endpoint(
                lambda: RtpProtocol(leg.receiver, True, run_if_due), sock=bound.rtcp
            )
        leg.attach(rtp, rtcp)
        self.legs[leg.leg_id] = leg
        self.by_call[leg.call_id] = leg
        LEGS_ACTIVE.set(len(self.legs))
        stream = self.bus.keys.audio_out(leg.call_id)
        self._stream_call[stream] = leg.call_id
        if shifted is not None:
            self._takeovers[leg.leg_id] = (msg.heard_until, shifted)  # audio:out joins at the update
        else:
            self.audio_cursor.setdefault(stream, await self._last_id(stream))
        log.info(
            "leg opened",
            extra={"call_id": leg.call_id, "leg": leg.leg_id, "port": leg.port, "takeover": msg.takeover},
        )
        return self._opened(leg)

    def _opened(self, leg: Leg) -> LegOpened:
        return LegOpened(
            call_id=leg.call_id,
            leg_id=leg.leg_id,
            worker=self.worker_id,
            address=self.address,
            port=leg.port,
            crypto_suite=SDES_SUITE if leg.srtp else "",
            crypto_key=format_sdes_inline(leg.local_key).removeprefix("inline:") if leg.srtp else "",
        )

    def _refusal(self, msg: LegOpen, error: str) -> LegOpened:
        log.warning("leg refused", extra={"call_id": msg.call_id, "leg": msg.leg_id, "error": error})
        return LegOpened(
            call_id=msg.call_id, leg_id=msg.leg_id, worker=self.worker_id, address="", port=0, error=error
        )

    async def _update(self, msg: LegUpdate) -> Ack:
        leg = self.legs.get(msg.leg_id)
        if leg is None:
            return Ack(call_id=msg.call_id, ok=False, error="unknown leg")
        takeover = self._takeovers.get(msg.leg_id)
        try:
            msg.remote_address = await _resolve(msg.remote_address)
            if takeover is None:
                leg.update(msg)
            else:
                await self._take_over(leg, msg, *takeover)
        except (LegError, OSError) as exc:
            return Ack(call_id=msg.call_id, ok=False, error=str(exc))
        return Ack(call_id=msg.call_id)

    async def _take_over(self, leg: Leg, msg: LegUpdate, heard_until: float, sink: ShiftedSink) -> None:
        """The first update of a takeover leg: read where the call stood, start the leg on the same
        media clock, fill its playout, then follow ``audio:out`` from what was read."""
        pickup = await pick_up(self.bus, leg.call_id, heard_until)
        sink.ms, sink.seq = pickup.clock_ms, pickup.clock_seq
        leg.clock_offset_ms = pickup.clock_ms
        leg.update(msg)
        del self._takeovers[leg.leg_id]
        if leg.closed:
            return
        restore(leg.playout, pickup)
        self.audio_cursor[self.bus.keys.audio_out(leg.call_id)] = pickup.audio_cursor
        log.info(
            "leg took the call over",
            extra={
                "call_id": leg.call_id,
                "leg": leg.leg_id,
                "turns": sorted(pickup.played_ms) or sorted({c.turn_id for c in pickup.chunks}),
                "played_ms": pickup.played_ms,
            },
        )

    def _close_orphan(self, leg: Leg, reason: str, detail: str) -> None:
        """Close a leg no edge will close, and say so on its call's events."""
        if self.legs.get(leg.leg_id) is not leg:
            return
        leg.report_error(f"{EndReason.MEDIA_ORPHANED}: leg {leg.leg_id} closed, {detail}")
        self._close_leg(leg.leg_id)
        LEGS_ORPHANED.labels(reason).inc()
        log.warning(
            "orphaned leg closed",
            extra={"call_id": leg.call_id, "leg": leg.leg_id, "reason": reason, "detail": detail},
        )

    def _close_leg(self, leg_id: str) -> None:
        leg = self.legs.pop(leg_id, None)
        if leg is None:
            return
        self._takeovers.pop(leg_id, None)
        leg.close()
        self.pool.release(leg.ports)
        self.writer.forget(leg.call_id)
        if self.by_call.get(leg.call_id) is leg:
            del self.by_call[leg.call_id]
            stream = self.bus.keys.audio_out(leg.call_id)
            self.audio_cursor.pop(stream, None)
            self._stream_call.pop(stream, None)
        LEGS_ACTIVE.set(len(self.legs))
        self._idle.set()
        log.info("leg closed", extra={"call_id": leg.call_id, "leg": leg_id})

    # ------------------------------------------------------------------ commands on a call's leg

    def _call_command(self, message: Message) -> None:
        leg = self.by_call.get(message.call_id)
        if leg is None:
            log.warning("command for a call without a leg here", extra={"type": message.TYPE})
            return
        if isinstance(message, SendDtmf):
            try:
                leg.send_dtmf(message.digits, message.duration_ms)
            except LegError as exc:
                leg.report_error(f"dtmf: {exc}")
        elif isinstance(message, StopPlayback):
            if message.reason == "barge_in":
                current = leg.playout.current
                if current is not None and current.turn_id == message.turn_id:
                    leg.cut_for_caller()
            elif message.turn_id:
                leg.playout.cancel(message.turn_id, "stopped")
            else:
                leg.playout.cancel_all("stopped")
        elif isinstance(message, ResumePlayback):
            leg.playout.resume(message.turn_id)
        elif isinstance(message, BargeInPolicy):
            leg.set_barge_in(message.enabled, message.guard_ms, message.min_speech_ms)
        elif isinstance(message, StartRecording):
            self._start_recording(leg, message.path)
        elif isinstance(message, PlayAudio):
            task = asyncio.create_task(self._play_file(leg, message.path_or_url, message.turn_id))
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)

    def _start_recording(self, leg: Leg, path: str) -> None:
        target = Path(path or f"{leg.call_id}.wav")
        if not target.is_absolute():
            target = Path(self.settings.recording_path) / target
        try:
            leg.start_recording(target)
        except OSError as exc:
            leg.report_error(f"recording: {exc}")

    async def _play_file(self, leg: Leg, source: str, turn_id: str) -> None:
        """Play a WAV file below the working directory as a turn (URLs are not fetched)."""
        path = Path(source)
        if "://" in source or path.is_absolute() or ".." in path.parts:
            leg.report_error(f"play: only WAV files below the working directory are played, not {source!r}")
            return
        try:
            pcm, rate = await asyncio.to_thread(read_wav_mono, path)
        except (OSError, wave.Error, ValueError) as exc:
            leg.report_error(f"play: {exc}")
            return
        leg.playout.add_chunk(turn_id or f"play-{time.monotonic_ns()}", 0, pcm, rate, True)

    # ------------------------------------------------------------------ port block lease

    async def _renew_loop(self) -> None:
        backoff = Backoff()
        interval = self.config.redis.heartbeat_interval
        while not self._stopping:
            try:
                for block in await self.lease.renew():
                    self.pool.drop_block(block)
                await self.watch.publish({leg.call_id for leg in self.legs.values()})
                backoff.reset()
                await asyncio.sleep(interval)
            except REDIS_DOWN as exc:
                log.warning("port lease renewal failed", extra={"error": str(exc)})
                await asyncio.sleep(backoff.next_delay())

    async def _orphan_loop(self) -> None:
        """Every few seconds: close the legs whose call ended or whose edge is gone (orphans.py)."""
        backoff = Backoff()
        while not self._stopping:
            await asyncio.sleep(self.watch.period)
            try:
                found = await self.watch.orphans(list(self.legs.values()), time.monotonic())
            except REDIS_DOWN as exc:
                log.warning("orphaned legs check failed", extra={"error": str(exc)})
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            for leg, reason, detail in found:
                self._close_orphan(leg, reason, detail)


async def _resolve(address: str) -> str:
    """An IPv4 literal as is; a host name through the resolver (SDP c= lines may carry one)."""
    if not address:
        return address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(address, None, family=socket.AF_INET)
        return str(infos[0][4][0])
    if ip.version != 4:
        raise LegError(f"remote address {address} is IPv6; this worker binds IPv4")
    return address


def read_wav_mono(path: Path) -> tuple[bytes, int]:
    """PCM16 mono little-endian and the rate of a 16-bit WAV (stereo is mixed down)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit WAV is played")
        channels, rate = wav.getnchannels(), wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype("<i2")
    return samples.tobytes(), rate
