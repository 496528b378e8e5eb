"""One call as a phone makes it: SIP over TLS, SRTP both ways, 20 ms packets paced on a monotonic grid
from a thread of their own, every packet received stamped on arrival in another thread. A re-offer
that moves the system's media (a re-INVITE after a media worker was lost) retargets the sender and
rekeys the receiver."""

from __future__ import annotations

import collections
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from turns import g711
from turns.metrics import FRAME, SPEECH_DBFS, Timeline, Utterance, frame_dbfs, speech_frames
from turns.rtp import PCMU, Srtp, build_rtp, inline_key, is_rtcp, key_from_inline, new_key, parse_rtp
from turns.sip import SdpAnswer, SipClient, parse_sdp_answer, sdp_offer
from turns.voices import Clip, Step

log = logging.getLogger("bench.turns")
PACKET_S = 0.020
SILENCE_PAYLOAD = bytes([g711.SILENCE]) * FRAME
GREETING_WAIT_S = 10.0
QUIET_BEFORE_ASKING_S = 2.5  # agent silence that counts as "the agent has finished"
QUIET_WAIT_S = 30.0  # longest wait for that silence
REPLY_ONSET_WAIT_S = 10.0  # longest wait for a reply to start before a backchannel or interruption
CLIP_SEND_MARGIN_S = 2.0


def realtime() -> None:
    """Give the calling thread a real-time priority (SCHED_FIFO) where allowed, so that a busy machine
    delays its wake-ups less; without the privilege it stays as it is."""
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(10))
    except (OSError, AttributeError):
        pass


@dataclass
class Queued:
    clip: Clip
    frame_times: list[float] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


class Sender(threading.Thread):
    """Packet n leaves at origin + n * 20 ms: the queued clip's next frame, else G.711 silence.
    ``precise`` spins out the last 1.5 ms of each wait at real-time priority; many calls at once
    (``make chaos``) pace with sleeps alone, or their spinning would starve the system under test."""

    def __init__(self, sock: socket.socket, dest: tuple[str, int], srtp: Srtp, precise: bool = True) -> None:
        super().__init__(name="rtp-sender", daemon=True)
        self.sock, self.dest, self.srtp = sock, dest, srtp
        self.precise = precise
        self.queue: collections.deque[Queued] = collections.deque()
        self.stop = threading.Event()
        self.sent = 0
        self.late_max_s = 0.0
        self.late_5ms = 0  # packets sent more than 5 ms after their slot
        self.ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)

    def retarget(self, dest: tuple[str, int]) -> None:
        """Send the next packets there (the peer's media moved); one assignment, read once a packet."""
        self.dest = dest

    def play(self, clip: Clip) -> Queued:
        item = Queued(clip)
        self.queue.append(item)
        return item

    def run(self) -> None:
        if self.precise:
            realtime()
        origin = time.monotonic()
        n = 0
        current: Queued | None = None
        offset = 0
        marker = True
        while not self.stop.is_set():
            due = origin + n * PACKET_S
            wait = due - time.monotonic()
            if not self.precise:
                time.sleep(max(0.0, wait))
            elif wait > 0.002:
                time.sleep(wait - 0.0015)
            while self.precise and time.monotonic() < due:
                pass
            if current is None and self.queue:
                current, offset, marker = self.queue.popleft(), 0, True
            if current is not None:
                frame = current.clip.pcm[offset : offset + FRAME]
                frame = np.concatenate([frame, np.zeros(FRAME - len(frame), dtype=np.int16)])
                payload = g711.encode(frame)
            else:
                payload = SILENCE_PAYLOAD
            packet = build_rtp(PCMU, self._sequence, self._timestamp, self.ssrc, payload, marker)
            marker = False
            try:
                self.sock.sendto(self.srtp.protect(packet), self.dest)
            except OSError as exc:
                log.warning("send failed: %s", exc)
            sent_at = time.monotonic()
            self.late_max_s = max(self.late_max_s, sent_at - due)
            self.late_5ms += sent_at - due > 0.005
            if current is not None:
                current.frame_times.append(sent_at)
                offset += FRAME
                if offset >= len(current.clip.pcm):
                    current.done.set()
                    current = None
            self.sent += 1
            self._sequence = (self._sequence + 1) & 0xFFFF
            self._timestamp = (self._timestamp + FRAME) & 0xFFFFFFFF
            n += 1
            if time.monotonic() - due > 0.2:  # a stall: skip ahead rather than burst
                n = int((time.monotonic() - origin) / PACKET_S) + 1


class Receiver(threading.Thread):
    """Stamps each datagram with time.monotonic() as it is read, then unprotects and decodes it."""

    def __init__(self, sock: socket.socket, srtp: Srtp, precise: bool = True) -> None:
        super().__init__(name="rtp-receiver", daemon=True)
        self.sock, self.srtp = sock, srtp
        self.precise = precise  # read at real-time priority
        self.packets: list[tuple[float, bool]] = []  # (arrival, speech)
        self.audio: list[np.ndarray] = []  # decoded, one entry per packet
        self.errors: collections.Counter[str] = collections.Counter()
        self.stop = threading.Event()
        self.last_datagram = 0.0  # arrival of the last datagram of any kind, decrypted or not
        self.rekeyed_at: list[float] = []
        self.sock.settimeout(0.1)

    def rekey(self, srtp: Srtp) -> None:
        """Unprotect what arrives from now on with the peer's new key (a new SSRC is fine: the
        context takes any inbound SSRC)."""
        self.srtp = srtp
        self.rekeyed_at.append(time.monotonic())

    def run(self) -> None:
        if self.precise:
            realtime()
        while not self.stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            arrived = time.monotonic()
            self.last_datagram = arrived
            if is_rtcp(data):
                continue
            try:
                packet = parse_rtp(self.srtp.unprotect(data))
            except Exception as exc:  # pylibsrtp raises its own Error; a broken packet is counted
                self.errors[type(exc).__name__] += 1
                continue
            if packet.payload_type != PCMU:
                continue
            pcm = g711.decode(packet.payload)
            level = frame_dbfs(pcm)
            self.audio.append(pcm)
            self.packets.append((arrived, level > SPEECH_DBFS))

    # What the controller asks while the call runs (the list only grows; reading it is safe).
    def last_speech(self) -> float:
        for at, speech in reversed(self.packets):
            if speech:
                return at
        return 0.0

    def first_speech_after(self, t: float) -> float:
        """Arrival of the first speech packet after ``t``, 0 if none yet."""
        found = 0.0
        for at, speech in reversed(self.packets):
            if at <= t:
                break
            if speech:
                found = at
        return found


def follow_offers(sip: SipClient, sender: Sender, receiver: Receiver) -> None:
    """Move the call's media where each re-offer says: send to its address with our key, and read
    what comes with its key (RFC 4568 section 7.1.4: a new key in a re-offer re-keys the stream)."""

    def moved(media: SdpAnswer) -> None:
        receiver.rekey(Srtp(key_from_inline(media.crypto_inline), outbound=False))
        sender.retarget((media.address, media.port))

    sip.on_offer = moved


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


@dataclass
class CallResult:
    timeline: Timeline
    user: str
    statuses: list[int]
    bye_status: int
    packets_sent: int
    packets_received: int
    srtp_errors: dict[str, int]
    send_late_max_ms: float
    send_late_5ms: int
    remote_bye: bool
    problems: list[str]
    clock_offset: float = 0.0  # time.time() - time.monotonic() during the call


def utterance_sent(item: Queued) -> Utterance | None:
    """What the caller said, timed by the send times of its packets (None if nothing was spoken)."""
    clip = item.clip
    flags = speech_frames(clip.pcm)
    times = item.frame_times
    spoken = [i for i, f in enumerate(flags) if f and i < len(times)]
    if not spoken:
        return None
    pause = None
    if clip.pause_frames is not None:
        first, last = clip.pause_frames
        before = [i for i in spoken if i < first]
        after = [i for i in spoken if i > last]
        if before and after:
            # Packet n carries the 20 ms before it leaves: the silence runs from the send of the last
            # speech packet before the pause to 20 ms before the send of the first one after it.
            pause = (times[before[-1]], times[after[0]] - PACKET_S)
    return Utterance(clip.kind, clip.text, clip.voice, times[spoken[0]], times[spoken[-1]], pause)


def run_call(
    host: str,
    tls_port: int,
    user: str,
    steps: list[Step],
    expected_reply_ms: float,
    call_timeout_s: float = 240.0,
) -> CallResult:
    """Call, say ``steps``, hang up; every wait is bounded and the whole call by ``call_timeout_s``."""
    problems: list[str] = []
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rtp.bind((host, 0))
    local_key = new_key()
    sip = SipClient(host, tls_port, user)
    sender: Sender | None = None
    receiver: Receiver | None = None
    utterances: list[Utterance] = []
    statuses: list[int] = []
    bye_status = 0
    started = time.monotonic()
    try:
        ok, statuses = sip.call(sdp_offer(host, rtp.getsockname()[1], inline_key(local_key)))
        answer = parse_sdp_answer(ok.body)
        receiver = Receiver(rtp, Srtp(key_from_inline(answer.crypto_inline), outbound=False))
        receiver.start()
        sender = Sender(rtp, (answer.address, answer.port), Srtp(local_key, outbound=True))
        sender.start()
        follow_offers(sip, sender, receiver)
        rx = receiver

        def quiet_for(seconds: float) -> bool:
            last = rx.last_speech()
            return last > 0 and time.monotonic() - last >= seconds

        if not wait_until(lambda: rx.last_speech() > 0, GREETING_WAIT_S):
            problems.append("no greeting heard")
        wait_until(lambda: quiet_for(QUIET_BEFORE_ASKING_S), QUIET_WAIT_S)
        asked_at = time.monotonic()
        for step in steps:
            if sip.remote_bye.is_set() or time.monotonic() - started > call_timeout_s:
                problems.append("call ended early" if sip.remote_bye.is_set() else "call timed out")
                break
            if step.when == "silence":
                if not wait_until(lambda: quiet_for(QUIET_BEFORE_ASKING_S), QUIET_WAIT_S):
                    problems.append(f"agent never quiet before {step.clip.text!r}")
            else:
                since = asked_at
                if not wait_until(lambda since=since: rx.first_speech_after(since) > 0, REPLY_ONSET_WAIT_S):
                    problems.append(f"no agent reply to talk over with {step.clip.text!r}")
                    continue
                onset = rx.first_speech_after(since)
                time.sleep(max(0.0, onset + step.into_reply_s - time.monotonic()))
            if step.clip.kind in ("backchannel", "cough") and step.when == "reply":
                expected = expected_reply_ms
            else:
                expected = 0.0
            item = sender.play(step.clip)
            length_s = len(step.clip.pcm) / 8000
            if not item.done.wait(length_s + CLIP_SEND_MARGIN_S):
                problems.append(f"clip {step.clip.text!r} not sent in time")
            said = utterance_sent(item)
            if said is not None:
                said.expected_reply_ms = expected
                utterances.append(said)
                asked_at = said.speech_end
        # Let the last reply play out before hanging up.
        wait_until(lambda: quiet_for(QUIET_BEFORE_ASKING_S), QUIET_WAIT_S)
        bye_status = sip.hang_up()
    except Exception as exc:  # reported with the figures; the bench goes on with the next call
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        for thread in (sender, receiver):
            if thread is not None:
                thread.stop.set()
                thread.join(timeout=2.0)
        end = time.monotonic()
        sip.close()
        rtp.close()
    packets = list(receiver.packets) if receiver is not None else []
    audio = receiver.audio[: len(packets)] if receiver is not None else []
    return CallResult(
        timeline=Timeline(sip.answered_at, packets, utterances, end, audio),
        user=user,
        statuses=statuses,
        bye_status=bye_status,
        packets_sent=sender.sent if sender is not None else 0,
        packets_received=len(packets),
        srtp_errors=dict(receiver.errors) if receiver is not None else {},
        send_late_max_ms=1000 * sender.late_max_s if sender is not None else 0.0,
        send_late_5ms=sender.late_5ms if sender is not None else 0,
        remote_bye=sip.remote_bye.is_set(),
        problems=problems,
        clock_offset=time.time() - time.monotonic(),
    )
