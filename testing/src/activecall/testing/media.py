"""Test and benchmark helpers: the far end of a leg, a client of the worker's control stream, and
speech-like signals with a correlation measure to judge audio paths by.

:class:`RtpPeer` binds a UDP socket (and one for RTCP), keys SRTP with SDES the way an SDP exchange
would, sends G.711 frames, raw datagrams or telephone events, and keeps everything it receives.
:class:`LegClient` opens, updates and closes a leg over the bus as the sip-edge does.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

from activecall import audio
from activecall.bus import Bus
from activecall.config import Config, MediaSettings, RedisSettings
from activecall.media.dtmf import DtmfSender
from activecall.media.g711 import PCMU, G711Codec
from activecall.media.rtcp import RtcpPacket, parse_compound
from activecall.media.rtp import RtpPacket, is_rtcp
from activecall.media.srtp import (
    SrtpError,
    SrtpProfile,
    SrtpSession,
    format_sdes_inline,
    generate_key_salt,
    parse_sdes_inline,
)
from activecall.messages import Ack, LegClose, LegOpen, LegOpened, LegUpdate, Message

Samples = npt.NDArray[np.int16]
Address = tuple[str, int]
T = TypeVar("T")
_HEADER: Final = struct.Struct("!BBHII")


@dataclass
class Received:
    packet: RtpPacket
    arrival: float
    source: Address
    local_port: int  # which of the peer's sockets it reached


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address, int], None]) -> None:
        self.on_datagram = on_datagram
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_datagram(data, addr, self.port)


class RtpPeer:
    """The far end of one leg. ``await start()``, then ``connect()`` with the leg's answer."""

    def __init__(self, codec: G711Codec = PCMU, srtp: bool = False, telephone_event_pt: int = 101) -> None:
        self.codec = codec
        self.telephone_event_pt = telephone_event_pt
        self.key = generate_key_salt() if srtp else b""
        self.session: SrtpSession | None = None
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self.remote: Address | None = None
        self.received: list[Received] = []
        self.rtcp: list[list[RtcpPacket]] = []
        self.rejected = 0
        self.on_packet: Callable[[Received], None] | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self.port = 0
        self._extra: list[asyncio.DatagramTransport] = []
        self._changed = asyncio.Event()

    @property
    def key_params(self) -> str:
        """This end's SDES key, as a LegUpdate carries it."""
        return format_sdes_inline(self.key)

    async def start(self, host: str = "127.0.0.1") -> RtpPeer:
        loop = asyncio.get_running_loop()
        for _ in range(50):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Endpoint(self._on_rtp), local_addr=(host, 0)
            )
            self.port = transport.get_extra_info("sockname")[1]
            try:
                rtcp, _ = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(self._on_rtcp), local_addr=(host, self.port + 1)
                )
            except OSError:
                transport.close()
                continue
            self._rtp, self._rtcp = transport, rtcp
            self._extra.append(transport)
            return self
        raise OSError("no free port pair for the peer")

    async def move(self, host: str = "127.0.0.1") -> int:
        """Send from a new socket from now on (a NAT rebinding); the old one keeps receiving."""
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Endpoint(self._on_rtp), local_addr=(host, 0)
        )
        self._rtp = transport
        self._extra.append(transport)
        port: int = transport.get_extra_info("sockname")[1]
        return port

    def connect(self, remote: Address, remote_key: str = "", suite: str = "AES_CM_128_HMAC_SHA1_80") -> None:
        """Where to send, and the leg's SDES key when SRTP is on."""
        self.remote = remote
        if self.key:
            self.session = SrtpSession(SrtpProfile.from_suite(suite), self.key, parse_sdes_inline(remote_key))

    def close(self) -> None:
        for transport in (*self._extra, self._rtcp):
            if transport is not None:
                transport.close()

    # ------------------------------------------------------------------ sending

    def packet(
        self, payload: bytes, pt: int | None = None, marker: bool = False, timestamp: int | None = None
    ) -> bytes:
        """The next RTP packet (protected when SRTP is on); advances the sequence number."""
        ts = self.timestamp if timestamp is None else timestamp
        pt = self.codec.payload_type if pt is None else pt
        data = _HEADER.pack(0x80, (0x80 if marker else 0) | pt, self.seq, ts, self.ssrc) + payload
        self.seq = (self.seq + 1) & 0xFFFF
        return self.session.protect(data) if self.session is not None else data

    def send_frame(self, pcm: Samples, marker: bool = False) -> bytes:
        """Encode and send one frame; returns the datagram sent."""
        data = self.packet(self.codec.encode(pcm), marker=marker)
        self.timestamp = (self.timestamp + len(pcm)) & 0xFFFFFFFF
        self.send_raw(data)
        return data

    async def play(self, audio: Samples, frame: int = 160, interval: float = 0.020) -> None:
        """Send ``audio`` frame by frame on a 20 ms monotonic schedule, as a phone would."""
        start = time.monotonic()
        for index, offset in enumerate(range(0, len(audio) - frame + 1, frame)):
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.send_frame(audio[offset : offset + frame], marker=index == 0)

    def send_raw(self, data: bytes) -> None:
        assert self.remote is not None and self._rtp is not None
        self._rtp.sendto(data, self.remote)

    def dtmf_packets(self, digit: str, duration_ms: int = 100) -> list[bytes]:
        """The RFC 4733 packets of one digit at the current timestamp (the clock then moves past it)."""
        sender = DtmfSender(self.codec_rate, 20)
        packets = [
            self.packet(p.payload, pt=self.telephone_event_pt, marker=p.marker, timestamp=p.timestamp)
            for p in sender.packets(digit, duration_ms, self.timestamp)
        ]
        self.timestamp = (self.timestamp + len(packets) * 160) & 0xFFFFFFFF
        return packets

    @property
    def codec_rate(self) -> int:
        return 8000

    # ------------------------------------------------------------------ receiving

    def _on_rtp(self, data: bytes, addr: Address, local_port: int) -> None:
        if is_rtcp(data):
            self._on_rtcp(data, addr, local_port)
            return
        try:
            plain = self.session.unprotect(data) if self.session is not None else data
        except SrtpError:
            self.rejected += 1
            return
        item = Received(RtpPacket.parse(plain), time.monotonic(), addr, local_port)
        self.received.append(item)
        self._changed.set()
        if self.on_packet is not None:
            self.on_packet(item)

    def _on_rtcp(self, data: bytes, addr: Address, local_port: int) -> None:
        try:
            plain = self.session.unprotect_rtcp(data) if self.session is not None else data
        except SrtpError:
            self.rejected += 1
            return
        self.rtcp.append(parse_compound(plain))
        self._changed.set()

    def audio(self, payload_type: int | None = None) -> Samples:
        """The decoded audio of every received packet of the codec's payload type, in arrival order."""
        pt = self.codec.payload_type if payload_type is None else payload_type
        frames = [self.codec.decode(r.packet.payload) for r in self.received if r.packet.payload_type == pt]
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 5.0) -> None:
        """Wait until ``predicate()`` (checked on every datagram) holds; TimeoutError after ``within_s``."""
        async with asyncio.timeout(within_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


class LegClient:
    """One leg on a media worker, driven over the bus as the sip-edge drives it, with its peer."""

    def __init__(self, bus: Bus, worker_id: str, peer: RtpPeer, call_id: str = "", leg_id: str = "") -> None:
        self.bus = bus
        self.worker_id = worker_id
        self.peer = peer
        self.call_id = call_id or f"call-{secrets.token_hex(4)}"
        self.leg_id = leg_id or f"leg-{secrets.token_hex(4)}"
        self.opened: LegOpened | None = None

    @property
    def control_key(self) -> str:
        return self.bus.keys.media_control(self.worker_id)

    async def request(self, message: Message, wait_s: float = 2.0) -> Message:
        message.call_id = self.call_id
        return await self.bus.request(self.control_key, message, wait_s=wait_s)

    async def open(self, srtp: bool, rtcp_mux: bool = False) -> LegOpened:
        """leg.open; on success the peer is pointed at the leg's address and keyed with its SDES key."""
        answer = await self.request(LegOpen(leg_id=self.leg_id, srtp=srtp, rtcp_mux=rtcp_mux))
        assert isinstance(answer, LegOpened)
        self.opened = answer
        if not answer.error:
            self.peer.connect((answer.address, answer.port), answer.crypto_key)
        return answer

    async def update(self, **fields: object) -> Ack:
        """leg.update with the peer's address, codec and key; ``fields`` override any of them."""
        peer = self.peer
        values: dict[str, object] = {
            "remote_address": "127.0.0.1",
            "remote_port": peer.port,
            "payload_type": peer.codec.payload_type,
            "codec": peer.codec.name,
            "telephone_event_pt": peer.telephone_event_pt,
        }
        if peer.key:
            values.update(remote_crypto_suite="AES_CM_128_HMAC_SHA1_80", remote_crypto_key=peer.key_params)
        values.update(fields)
        answer = await self.request(LegUpdate(leg_id=self.leg_id, **values))  # type: ignore[arg-type]
        assert isinstance(answer, Ack)
        return answer

    async def close(self) -> Ack:
        answer = await self.request(LegClose(leg_id=self.leg_id))
        assert isinstance(answer, Ack)
        return answer

    async def command(self, message: Message) -> None:
        """A control message without an answer (dtmf.send, playback.stop, recording.start)."""
        message.call_id = self.call_id
        await self.bus.publish(self.control_key, message)

    async def events(self) -> list[Message]:
        entries = await self.bus.read({self.bus.keys.events(self.call_id): "0"}, count=100_000)
        return [e.message for e in entries]

    async def audio_in(self) -> Samples:
        """Everything the worker appended to the call's audio:in, as one signal."""
        entries = await self.bus.read({self.bus.keys.audio_in(self.call_id): "0"}, count=100_000)
        pcm = b"".join(getattr(e.message, "pcm", b"") for e in entries)
        return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


def voiced(seconds: float, rate: int = 8000, f0: float = 130.0, seed: float = 1.0) -> Samples:
    """Speech-like audio: a harmonic series with drifting pitch, cut into 190 ms syllables."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t + seed))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    harmonics = [np.sin(k * phase) / k for k in range(1, 30) if k * f0 * 1.1 < min(3400.0, rate / 2)]
    position = (t % 0.25) / 0.19
    envelope = np.where(position < 1, np.sin(np.pi * np.minimum(position, 1)), 0.0)
    shaped = np.sum(harmonics, axis=0) * envelope
    out: Samples = (shaped / np.abs(shaped).max() * 9000).astype(np.int16)
    return out


def ncc_peak(reference: Samples, signal: Samples, max_lag: int) -> tuple[float, int]:
    """Best normalised cross-correlation of ``reference`` inside ``signal`` within ``max_lag`` samples,
    and that lag."""
    value, lag = audio.ncc_peak(signal, reference, max_lag=max_lag)
    return value, lag


def loopback_config(redis: RedisSettings, recordings: Path, **media: object) -> Config:
    """A worker on 127.0.0.1 with a random 100-port range of its own cut into blocks of 20."""
    base = 20000 + secrets.randbelow(400) * 100
    settings = MediaSettings(port_block_size=20, recording_path=str(recordings), barge_in_min_speech_ms=60)
    for key, value in media.items():
        if not hasattr(settings, key):
            raise AttributeError(f"MediaSettings has no {key!r}")
        setattr(settings, key, value)
    return Config(addr="127.0.0.1", rtp_start_port=base, rtp_end_port=base + 99, redis=redis, media=settings)


async def poll(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], within_s: float = 5.0) -> T:
    """Await ``probe()`` every 20 ms until ``done`` accepts its value; TimeoutError after ``within_s``."""
    deadline = time.monotonic() + within_s
    for _ in itertools.count():
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no acceptable value within {within_s} s")
