"""Media legs on the media workers: open, update and close over ``media:{worker}:control``.

A leg is opened on the least-loaded live worker (another one is tried once if the first fails or
does not answer; workers the edge found lost are never picked); the worker replies with its RTP
address, port and, for SRTP, its SDES key (base64 of the 30-byte master key and salt, as in
``a=crypto inline:``). After offer/answer the leg learns the peer's address, codec, telephone-event
type, direction and key.

Each request is an XADD and a blocking BLPOP for its reply, so it runs on a connection of its own
(``Bus.execute_alone``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass, field

from activecall import tokens
from activecall.bus import REDIS_DOWN, Bus, BusTimeout, xadd_command
from activecall.contract import MediaDirection
from activecall.messages import Ack, LegClose, LegOpen, LegOpened, LegUpdate, Message, decode
from activecall.sip_edge import metrics
from activecall.sip_edge.app.admission import MediaPool
from activecall.sip_edge.sip.syntax.sdp import SUITE_AES_CM_128_HMAC_SHA1_80, Answer, CryptoAttribute

log = logging.getLogger("activecall.sip_edge.app.legs")

OPEN_ATTEMPTS = 2


class LegError(Exception):
    """No media worker could give the call a leg (the call is refused with 503)."""


@dataclass
class Leg:
    leg_id: str
    worker: str
    address: str
    port: int
    srtp: bool = False
    crypto_suite: str = ""
    crypto_key: str = ""
    opened_at: float = field(default_factory=time.time)  # wall clock: a worker restarted since lost it

    def crypto(self, tag: int = 1, suite: str | None = None) -> CryptoAttribute:
        """Our ``a=crypto`` line with the worker's key; the suite may be the offer's (same key size)."""
        try:
            key_salt = base64.b64decode(self.crypto_key, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise LegError(f"worker {self.worker} sent an unreadable SRTP key") from exc
        return CryptoAttribute(tag, suite or self.crypto_suite or SUITE_AES_CM_128_HMAC_SHA1_80, key_salt)


def media_address(leg: Leg, external_ip: str) -> str:
    """The RTP address written in c=: the public address when set, else the worker's."""
    return external_ip or leg.address


class LegClient:
    """Leg requests of one edge."""

    def __init__(self, bus: Bus, pool: MediaPool, timeout: float | None = None) -> None:
        self.bus = bus
        self.pool = pool
        self.timeout = timeout
        # Workers whose heartbeat stopped: the registry still calls them live for a while.
        self.lost: set[str] = set()

    async def _request(self, worker: str, message: Message) -> Message:
        """The bus's request/reply, with the XADD and the blocking BLPOP sent in one write: Redis runs
        them in order on one connection, so the reply cannot be missed and a round trip is saved."""
        started = time.perf_counter()
        bus = self.bus
        reply_key = bus.keys.reply(tokens.token_hex(8))
        message.reply_to = reply_key  # type: ignore[attr-defined]
        wait = self.timeout if self.timeout is not None else bus.settings.reply_timeout
        commands = [
            xadd_command(bus.keys.media_control(worker), message, bus.settings.events_maxlen),
            ("BLPOP", reply_key, wait),
        ]
        try:
            _, popped = await bus.execute_alone(commands, wait)
        finally:
            metrics.child(metrics.LEG_REQUEST, message.TYPE).observe(time.perf_counter() - started)
        if popped is None:
            raise BusTimeout(f"no reply to {message.TYPE} from {worker} within {wait:.1f} s")
        return decode(popped[1])

    async def open(
        self,
        call_id: str,
        leg_id: str,
        srtp: bool,
        *,
        exclude: tuple[str, ...] = (),
        takeover: bool = False,
        heard_until: float = 0.0,
        crypto_key: str = "",
    ) -> Leg:
        """A leg on the best worker not in ``exclude``; the other arguments as in LegOpen."""
        tried: list[str] = []
        for _ in range(OPEN_ATTEMPTS):
            worker = await self.pool.pick(exclude=[*tried, *exclude, *self.lost])
            if worker is None:
                break
            tried.append(worker.id)
            request = LegOpen(
                call_id=call_id,
                leg_id=leg_id,
                srtp=srtp,
                takeover=takeover,
                heard_until=heard_until,
                crypto_key=crypto_key,
            )
            try:
                reply = await self._request(worker.id, request)
            except (BusTimeout, *REDIS_DOWN) as exc:
                log.warning(
                    "leg open failed",
                    extra={"call_id": call_id, "media_worker": worker.id, "error": str(exc)},
                )
                continue
            if isinstance(reply, LegOpened) and not reply.error and reply.port:
                if srtp and not reply.crypto_key:
                    raise LegError(f"worker {worker.id} opened an SRTP leg without a key")
                return Leg(
                    leg_id, worker.id, reply.address, reply.port, srtp, reply.crypto_suite, reply.crypto_key
                )
            log.warning(
                "leg refused", extra={"call_id": call_id, "media_worker": worker.id, "reply": repr(reply)}
            )
        raise LegError("no media worker could open a leg")

    async def update(self, call_id: str, leg: Leg, answer: Answer) -> None:
        """Tell the worker where to send and how (RFC 3264 outcome of offer/answer)."""
        remote = answer.remote_crypto
        message = LegUpdate(
            call_id=call_id,
            leg_id=leg.leg_id,
            remote_address=answer.remote_address,
            remote_port=answer.remote_port,
            payload_type=answer.payload_type,
            codec=answer.codec.name.upper(),
            telephone_event_pt=answer.telephone_event_pt or 0,
            ptime=answer.ptime,
            direction=MediaDirection(answer.direction.value),
            remote_crypto_suite=remote.suite if remote else "",
            remote_crypto_key=base64.b64encode(remote.key_salt).decode("ascii") if remote else "",
        )
        reply = await self._request(leg.worker, message)
        if isinstance(reply, Ack) and not reply.ok:
            raise LegError(f"worker {leg.worker} refused the leg update: {reply.error}")

    def close_command(self, call_id: str, leg: Leg) -> tuple[str, LegClose]:
        """The stream and message that close ``leg``. Sent without ``reply_to``, with the call's last
        events: nothing waits on the worker, whose RTP timeout closes a leg whose close went astray."""
        return self.bus.keys.media_control(leg.worker), LegClose(call_id=call_id, leg_id=leg.leg_id)
