"""One live call of a chaos scenario, run by a thread: the bench-turns phone (SIP over TLS, SRTP,
every packet stamped on arrival) that waits for the greeting, waits for the harness's event, says
one question, waits for the agent's next turn, hangs up and keeps listening for RTP that should
no longer come."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from turns.caller import QUIET_BEFORE_ASKING_S, Receiver, Sender, follow_offers, utterance_sent, wait_until
from turns.rtp import Srtp, inline_key, key_from_inline, new_key
from turns.sip import SipClient, parse_sdp_answer, sdp_offer
from turns.voices import Clip

HOST = "127.0.0.1"
GREETING_WAIT_S = 20.0
QUIET_WAIT_S = 30.0
REPLY_WAIT_S = 25.0  # from the end of the caller's question to the first agent speech
HEARD_AFTER_REPLY_S = 1.0  # listen to the reply a little before hanging up
GO_WAIT_S = 300.0


@dataclass
class ChaosCall:
    index: int
    user: str
    tls_port: int
    question: Clip
    ready: threading.Event = field(default_factory=threading.Event)  # greeting heard and over
    go: threading.Event = field(default_factory=threading.Event)  # set by the harness after the event
    done: threading.Event = field(default_factory=threading.Event)  # hung up (or failed)
    stop_listening: threading.Event = field(default_factory=threading.Event)
    problems: list[str] = field(default_factory=list)
    sip_call_id: str = ""
    answered_at: float = 0.0
    question_end: float = 0.0
    reply_at: float = 0.0  # first agent speech after the question; 0: none came
    bye_at: float = 0.0
    bye_status: int = 0
    remote_bye: bool = False
    reoffers: list[tuple[float, str, int]] = field(default_factory=list)
    reconnects: int = 0
    receiver: Receiver | None = None
    sender: Sender | None = None
    thread: threading.Thread | None = None

    def start(self) -> ChaosCall:
        self.thread = threading.Thread(target=self._run, name=f"call-{self.index}", daemon=True)
        self.thread.start()
        return self

    @property
    def packets(self) -> list[tuple[float, bool]]:
        return list(self.receiver.packets) if self.receiver is not None else []

    @property
    def survived(self) -> bool:
        return self.reply_at > 0

    def _run(self) -> None:
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rtp.bind((HOST, 0))
        sip: SipClient | None = None
        try:
            sip = SipClient(HOST, self.tls_port, self.user)
            self.sip_call_id = sip.dialog.call_id
            self._talk(sip, rtp)
        except Exception as exc:  # reported per call; the scenario goes on with the others
            self.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.ready.set()
            if self.sender is not None:
                self.sender.stop.set()
            self.done.set()
            self.stop_listening.wait(GO_WAIT_S)
            if self.receiver is not None:
                self.receiver.stop.set()
                self.receiver.join(timeout=2.0)
            if sip is not None:
                self.reoffers, self.reconnects = list(sip.reoffers), sip.reconnects
                sip.close()
            rtp.close()

    def _talk(self, sip: SipClient, rtp: socket.socket) -> None:
        key = new_key()
        ok, _ = sip.call(sdp_offer(HOST, rtp.getsockname()[1], inline_key(key)))
        self.answered_at = sip.answered_at
        answer = parse_sdp_answer(ok.body)
        # Not the bench-turns phone's real-time pacing: twenty spinning callers would starve the
        # system under test, and a gap of seconds does not need sub-millisecond send times.
        receiver = Receiver(rtp, Srtp(key_from_inline(answer.crypto_inline), outbound=False), precise=False)
        sender = Sender(rtp, (answer.address, answer.port), Srtp(key, outbound=True), precise=False)
        self.receiver, self.sender = receiver, sender
        receiver.start()
        sender.start()
        follow_offers(sip, sender, receiver)
        if not wait_until(lambda: receiver.last_speech() > 0, GREETING_WAIT_S):
            self.problems.append("no greeting heard")
        if not wait_until(lambda: self._quiet(QUIET_BEFORE_ASKING_S), QUIET_WAIT_S):
            self.problems.append("agent never quiet after the greeting")
        self.ready.set()
        self.go.wait(GO_WAIT_S)
        if sip.remote_bye.is_set():
            self.problems.append("the system hung up before the question")
        else:
            self._ask(sender, receiver)
        self.remote_bye = sip.remote_bye.is_set()
        self.bye_at = time.monotonic()
        sender.stop.set()  # a caller that hung up sends nothing more
        self.bye_status = sip.hang_up()

    def _ask(self, sender: Sender, receiver: Receiver) -> None:
        item = sender.play(self.question)
        if not item.done.wait(len(self.question.pcm) / 8000 + 2.0):
            self.problems.append("question not sent in time")
        said = utterance_sent(item)
        self.question_end = said.speech_end if said is not None else time.monotonic()
        end = self.question_end
        if wait_until(lambda: receiver.first_speech_after(end) > 0, REPLY_WAIT_S):
            self.reply_at = receiver.first_speech_after(end)
            time.sleep(HEARD_AFTER_REPLY_S)
        else:
            self.problems.append(f"no agent turn within {REPLY_WAIT_S:.0f} s of the question")

    def _quiet(self, seconds: float) -> bool:
        assert self.receiver is not None
        last = self.receiver.last_speech()
        return last > 0 and time.monotonic() - last >= seconds

    def receiving(self, now: float, within_s: float = 2.0) -> bool:
        """RTP still arriving well after our BYE (a leg nobody closed)."""
        if self.receiver is None or not self.bye_at:
            return False
        last = self.receiver.last_datagram
        return last > self.bye_at + within_s and now - last < within_s

    def longest_gap(self, since: float) -> float:
        """The longest time without a received audio packet from ``since`` to the agent's next turn
        (or to the end of listening when none came)."""
        until = self.reply_at or self.bye_at or time.monotonic()
        previous, longest = since, 0.0
        for arrived, _ in self.packets:
            if arrived <= since:
                continue
            if arrived > until:
                break
            longest = max(longest, arrived - previous)
            previous = arrived
        return max(longest, until - previous)
