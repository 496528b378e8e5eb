"""A call's SIP dialog and media as plain data, kept in ``call:{id}:dialog`` so another edge can go on
with the call (docs/architecture.md, "SIP edge loss and drain").

Beside the dialog (:class:`~activecall.sip_edge.sip.dialog.snapshot.DialogSnapshot`) it holds the
leg (worker, port, SRTP key) and the negotiated :class:`Answer` (RFC 3264: codec, payload types,
where to send, both keys, and the policy our next answer follows), so the adopting edge neither
negotiates again nor opens a new leg. Pure and synchronous, with golden tests.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from activecall.sip_edge.app.legs import Leg
from activecall.sip_edge.sip.dialog.snapshot import DialogSnapshot, SnapshotError
from activecall.sip_edge.sip.syntax.sdp import (
    Answer,
    AnswerPolicy,
    Codec,
    CryptoAttribute,
    Direction,
    SdpError,
    SessionDescription,
    SrtpMode,
)

CALL_SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class CallSnapshot:
    """One answered call as its edge holds it: the dialog, the leg, the negotiated media."""

    dialog: DialogSnapshot
    leg: Leg
    answer: Answer

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": CALL_SNAPSHOT_VERSION,
            "dialog": self.dialog.to_dict(),
            # When this edge opened the leg means nothing to an edge that adopts the call: it counts
            # the leg's age from its adoption.
            "leg": {k: v for k, v in asdict(self.leg).items() if k != "opened_at"},
            "answer": answer_to_dict(self.answer),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallSnapshot:
        if data.get("v") != CALL_SNAPSHOT_VERSION:
            raise SnapshotError(f"unknown call snapshot version {data.get('v')!r}")
        try:
            leg = Leg(**data["leg"])
            return cls(DialogSnapshot.from_dict(data["dialog"]), leg, answer_from_dict(data["answer"], leg))
        except (KeyError, TypeError, ValueError, SdpError) as exc:
            raise SnapshotError(f"unreadable call snapshot: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> CallSnapshot:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SnapshotError(f"call snapshot is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise SnapshotError("call snapshot is not an object")
        return cls.from_dict(data)


def answer_to_dict(answer: Answer) -> dict[str, Any]:
    codec = answer.codec
    policy = answer.policy
    return {
        "sdp": str(answer.sdp),
        "media_index": answer.media_index,
        "codec": [codec.name, codec.clock_rate, codec.payload_type, codec.channels, codec.fmtp],
        "telephone_event_pt": answer.telephone_event_pt,
        "ptime": answer.ptime,
        "remote_address": answer.remote_address,
        "remote_port": answer.remote_port,
        "remote_rtcp_port": answer.remote_rtcp_port,
        "rtcp_mux": answer.rtcp_mux,
        "direction": answer.direction.value,
        "local_crypto": _crypto_text(answer.local_crypto),
        "remote_crypto": _crypto_text(answer.remote_crypto),
        "policy": None
        if policy is None
        else {
            "local_address": policy.local_address,
            "local_port": policy.local_port,
            "srtp": policy.srtp.value,
            "direction": policy.direction.value,
            "ptime": policy.ptime,
        },
    }


def answer_from_dict(data: dict[str, Any], leg: Leg) -> Answer:
    """The answer :func:`answer_to_dict` wrote; a policy answers the next re-offer with ``leg``'s key,
    as the edge that set the call up did (codecs and telephone-event are the defaults it used)."""
    name, clock_rate, payload_type, channels, fmtp = data["codec"]
    policy_data = data["policy"]
    policy = None
    if policy_data is not None:
        policy = AnswerPolicy(
            local_address=str(policy_data["local_address"]),
            local_port=int(policy_data["local_port"]),
            srtp=SrtpMode(policy_data["srtp"]),
            crypto_factory=leg.crypto,
            direction=Direction(policy_data["direction"]),
            ptime=int(policy_data["ptime"]),
        )
    te = data["telephone_event_pt"]
    return Answer(
        sdp=SessionDescription.parse(data["sdp"]),
        media_index=int(data["media_index"]),
        codec=Codec(str(name), int(clock_rate), int(payload_type), int(channels), fmtp),
        telephone_event_pt=None if te is None else int(te),
        ptime=int(data["ptime"]),
        remote_address=str(data["remote_address"]),
        remote_port=int(data["remote_port"]),
        remote_rtcp_port=int(data["remote_rtcp_port"]),
        rtcp_mux=bool(data["rtcp_mux"]),
        direction=Direction(data["direction"]),
        local_crypto=_crypto(data["local_crypto"]),
        remote_crypto=_crypto(data["remote_crypto"]),
        policy=policy,
    )


def _crypto_text(crypto: CryptoAttribute | None) -> str | None:
    return None if crypto is None else str(crypto)


def _crypto(text: str | None) -> CryptoAttribute | None:
    return None if text is None else CryptoAttribute.parse(text)
