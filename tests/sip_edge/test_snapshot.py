"""A call's dialog, leg and negotiated media as stored in ``call:{id}:dialog``: golden vectors both ways
(the Twilio INVITE of test_dialog, answered with SRTP on a worker's leg), the dialog rebuilt from them,
and the errors of unreadable ones."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from test_dialog import TWILIO_INVITE

from activecall.sip_edge.app.legs import Leg
from activecall.sip_edge.app.snapshot import CallSnapshot, answer_from_dict, answer_to_dict
from activecall.sip_edge.sip.dialog.dialog import Dialog
from activecall.sip_edge.sip.dialog.snapshot import (
    DialogSnapshot,
    SnapshotError,
    capture,
    restore_dialog,
)
from activecall.sip_edge.sip.syntax.message import SipRequest
from activecall.sip_edge.sip.syntax.sdp import (
    SUITE_AES_CM_128_HMAC_SHA1_80,
    SessionDescription,
    SrtpMode,
    negotiate_answer,
)
from activecall.sip_edge.sip.syntax.uri import NameAddr
from activecall.sip_edge.sip.transport.transport import Flow, Transport

VECTORS = Path(__file__).parent / "vectors" / "snapshot"
EDGE_CONTACT = NameAddr.parse("<sip:active-call@203.0.113.5:5061;transport=tls>")
OFFER = (
    "v=0\r\no=root 1 1 IN IP4 54.172.60.2\r\ns=Twilio Media Gateway\r\nc=IN IP4 54.172.60.2\r\nt=0 0\r\n"
    "m=audio 14000 RTP/SAVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0\r\n"
    "a=sendrecv\r\n"
)
LEG = Leg(
    leg_id="c0ffee",
    worker="media-a",
    address="10.0.0.7",
    port=40002,
    srtp=True,
    crypto_suite=SUITE_AES_CM_128_HMAC_SHA1_80,
    crypto_key=base64.b64encode(bytes(range(30))).decode("ascii"),
)


@dataclass
class HeldSession:
    """What :func:`capture` reads of an InviteSession."""

    dialog: Dialog
    flow: Flow | None
    local_sdp: bytes
    remote_sdp: bytes
    peer_allow: frozenset[str] = field(default_factory=frozenset)


def held_call() -> tuple[HeldSession, CallSnapshot]:
    invite = SipRequest.parse(TWILIO_INVITE)
    dialog = Dialog.as_uas(invite, "edge1", EDGE_CONTACT)
    dialog.local_seq = 4711
    answer = negotiate_answer(
        SessionDescription.parse(OFFER),
        "203.0.113.5",
        LEG.port,
        srtp=SrtpMode.OPTIONAL,
        local_crypto_factory=LEG.crypto,
        session_id=3141,
    )
    flow = Flow(Transport.TLS, ("54.172.60.2", 40123), ("203.0.113.5", 5061))
    allow = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REFER", "NOTIFY"})
    session = HeldSession(dialog, flow, bytes(answer.sdp), OFFER.encode(), allow)
    return session, CallSnapshot(capture(session), LEG, answer)  # type: ignore[arg-type]


def vector(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


def test_an_answered_call_is_stored_as_the_golden_vector_says() -> None:
    _, snapshot = held_call()
    assert snapshot.to_dict() == vector("twilio_tls_srtp.json")
    assert json.loads(snapshot.to_json()) == snapshot.to_dict()


def test_the_golden_vector_reads_back_into_the_same_call() -> None:
    data = vector("twilio_tls_srtp.json")
    snapshot = CallSnapshot.from_dict(data)
    assert snapshot.to_dict() == data
    _, original = held_call()
    assert snapshot.dialog == original.dialog
    assert replace(snapshot.leg, opened_at=0.0) == replace(original.leg, opened_at=0.0)
    assert snapshot.answer == original.answer  # the policy is compared below
    policy, kept = snapshot.answer.policy, original.answer.policy
    assert policy is not None and kept is not None
    assert (policy.local_address, policy.local_port, policy.srtp, policy.direction, policy.ptime) == (
        kept.local_address,
        kept.local_port,
        kept.srtp,
        kept.direction,
        kept.ptime,
    )
    # The next answer is made with the leg's key, as by the edge that answered first.
    assert policy.crypto_factory(1, SUITE_AES_CM_128_HMAC_SHA1_80) == LEG.crypto(1)


def test_the_dialog_is_rebuilt_with_its_sequence_numbers_routes_and_our_contact() -> None:
    session, snapshot = held_call()
    ours = NameAddr.parse("<sip:active-call@203.0.113.9:5061;transport=tls>")
    dialog = restore_dialog(DialogSnapshot.from_dict(snapshot.dialog.to_dict()), ours)
    original = session.dialog
    assert dialog.key == original.key
    assert (dialog.local_seq, dialog.remote_seq, dialog.is_uac) == (4711, 101, False)
    assert [str(r) for r in dialog.route_set] == [str(r) for r in original.route_set]
    assert str(dialog.remote_target) == str(original.remote_target)
    assert dialog.local_contact == ours
    bye = dialog.create_request("BYE")
    original.local_contact = ours
    assert bytes(bye) == bytes(original.create_request("BYE"))
    assert bye.cseq.number == 4712


def test_an_outbound_answer_without_policy_round_trips() -> None:
    _, snapshot = held_call()
    answer = snapshot.answer
    from dataclasses import replace

    plain = replace(answer, policy=None, local_crypto=None, remote_crypto=None, telephone_event_pt=None)
    data = answer_to_dict(plain)
    assert data["policy"] is None and data["local_crypto"] is None
    assert answer_from_dict(json.loads(json.dumps(data)), LEG) == plain


def test_an_unknown_version_is_refused() -> None:
    data = vector("twilio_tls_srtp.json")
    with pytest.raises(SnapshotError, match="^unknown call snapshot version 2$"):
        CallSnapshot.from_dict({**data, "v": 2})
    with pytest.raises(SnapshotError, match="^unknown dialog snapshot version None$"):
        DialogSnapshot.from_dict({k: v for k, v in data["dialog"].items() if k != "v"})


def test_a_damaged_snapshot_raises_the_snapshot_error() -> None:
    data = vector("twilio_tls_srtp.json")
    broken = {**data, "dialog": {**data["dialog"], "local_seq": "many"}}
    with pytest.raises(SnapshotError, match="^unreadable call snapshot"):
        CallSnapshot.from_dict(broken)
    with pytest.raises(SnapshotError, match="^call snapshot is not JSON"):
        CallSnapshot.from_json(b"{")
    bad_uri = DialogSnapshot.from_dict({**data["dialog"], "remote_target": "sip:"})
    with pytest.raises(SnapshotError, match="^unreadable dialog snapshot"):
        restore_dialog(bad_uri)
