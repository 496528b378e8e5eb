"""A dialog and its INVITE session as plain data, so another process can go on with them.

RFC 3261 section 12.2 lists what continues a dialog: the Call-ID, both tags, both URIs, the CSeq
numbers in each direction, the route set and the remote target, and whether it is secure. To that an
INVITE session adds the last description each side sent (RFC 3264 section 8: the next offer is
versioned from ours), the methods the peer allows, and where its messages came from. Pure and
synchronous: :func:`capture` reads a session, :func:`restore_dialog` builds the :class:`Dialog`,
``to_dict``/``from_dict`` give a JSON-ready form.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from activecall.sip_edge.sip.dialog.dialog import Dialog, DialogState
from activecall.sip_edge.sip.syntax.uri import NameAddr, SipParseError, parse_uri

if TYPE_CHECKING:
    from activecall.sip_edge.sip.dialog.session import InviteSession

SNAPSHOT_VERSION = 1


class SnapshotError(ValueError):
    """A stored dialog that cannot be read back."""


@dataclass(frozen=True)
class DialogSnapshot:
    """What continues one INVITE dialog (RFC 3261 section 12.1) in another process."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    local_contact: str
    route_set: tuple[str, ...] = ()
    local_seq: int = 0
    remote_seq: int | None = None
    secure: bool = False
    is_uac: bool = False
    # Where the peer's messages came from: its transport (UDP, TCP, TLS) and address.
    transport: str = ""
    peer: tuple[str, int] = ("", 0)
    local_sdp: bytes = b""
    remote_sdp: bytes = b""
    peer_allow: tuple[str, ...] = field(default=())

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "call_id": self.call_id,
            "local_tag": self.local_tag,
            "remote_tag": self.remote_tag,
            "local_uri": self.local_uri,
            "remote_uri": self.remote_uri,
            "remote_target": self.remote_target,
            "local_contact": self.local_contact,
            "route_set": list(self.route_set),
            "local_seq": self.local_seq,
            "remote_seq": self.remote_seq,
            "secure": self.secure,
            "is_uac": self.is_uac,
            "transport": self.transport,
            "peer": [self.peer[0], self.peer[1]],
            "local_sdp": _text(self.local_sdp),
            "remote_sdp": _text(self.remote_sdp),
            "peer_allow": list(self.peer_allow),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DialogSnapshot:
        if data.get("v") != SNAPSHOT_VERSION:
            raise SnapshotError(f"unknown dialog snapshot version {data.get('v')!r}")
        try:
            remote_seq = data["remote_seq"]
            host, port = data["peer"]
            return cls(
                call_id=str(data["call_id"]),
                local_tag=str(data["local_tag"]),
                remote_tag=str(data["remote_tag"]),
                local_uri=str(data["local_uri"]),
                remote_uri=str(data["remote_uri"]),
                remote_target=str(data["remote_target"]),
                local_contact=str(data["local_contact"]),
                route_set=tuple(str(route) for route in data["route_set"]),
                local_seq=int(data["local_seq"]),
                remote_seq=None if remote_seq is None else int(remote_seq),
                secure=bool(data["secure"]),
                is_uac=bool(data["is_uac"]),
                transport=str(data["transport"]),
                peer=(str(host), int(port)),
                local_sdp=_bytes(data["local_sdp"]),
                remote_sdp=_bytes(data["remote_sdp"]),
                peer_allow=tuple(str(method) for method in data["peer_allow"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"unreadable dialog snapshot: {exc!r}") from exc


def capture(session: InviteSession) -> DialogSnapshot:
    """The state of ``session`` now."""
    dialog, flow = session.dialog, session.flow
    return DialogSnapshot(
        call_id=dialog.call_id,
        local_tag=dialog.local_tag,
        remote_tag=dialog.remote_tag,
        local_uri=str(dialog.local_uri),
        remote_uri=str(dialog.remote_uri),
        remote_target=str(dialog.remote_target),
        local_contact=str(dialog.local_contact),
        route_set=tuple(str(route) for route in dialog.route_set),
        local_seq=dialog.local_seq,
        remote_seq=dialog.remote_seq,
        secure=dialog.secure,
        is_uac=dialog.is_uac,
        transport=flow.transport.value if flow is not None else "",
        peer=flow.remote if flow is not None else ("", 0),
        local_sdp=session.local_sdp,
        remote_sdp=session.remote_sdp,
        peer_allow=tuple(sorted(session.peer_allow)),
    )


def restore_dialog(snapshot: DialogSnapshot, local_contact: NameAddr | None = None) -> Dialog:
    """The confirmed dialog ``snapshot`` describes; ``local_contact`` replaces the stored one (the
    process that goes on with the dialog is reached at its own address)."""
    try:
        return Dialog(
            call_id=snapshot.call_id,
            local_tag=snapshot.local_tag,
            remote_tag=snapshot.remote_tag,
            local_uri=NameAddr.parse(snapshot.local_uri),
            remote_uri=NameAddr.parse(snapshot.remote_uri),
            remote_target=parse_uri(snapshot.remote_target),
            local_contact=local_contact or NameAddr.parse(snapshot.local_contact),
            route_set=[NameAddr.parse(route) for route in snapshot.route_set],
            local_seq=snapshot.local_seq,
            remote_seq=snapshot.remote_seq,
            secure=snapshot.secure,
            is_uac=snapshot.is_uac,
            state=DialogState.CONFIRMED,
        )
    except SipParseError as exc:
        raise SnapshotError(f"unreadable dialog snapshot: {exc}") from exc


def _text(sdp: bytes) -> str:
    """SDP is UTF-8 text (RFC 8866 section 5); anything else is kept as base64."""
    try:
        return sdp.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(sdp).decode("ascii")


def _bytes(text: str) -> bytes:
    if text.startswith("base64:"):
        return base64.b64decode(text[len("base64:") :])
    return text.encode("utf-8")
