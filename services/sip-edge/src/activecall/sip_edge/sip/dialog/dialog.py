"""Dialog state (RFC 3261 section 12): identifiers, sequence numbers, route set and remote target.

Pure and synchronous: a :class:`Dialog` is built from the request and response that create it, checks
the CSeq of requests it receives, and builds the requests it sends. Requests follow the route set
learned from Record-Route (loose routing, with the strict-routing rewrite of section 12.2.1.1); the
remote target from Contact only becomes the Request-URI, so a peer whose Contact is a private
address is still reached through its proxies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from activecall import tokens
from activecall.sip_edge.sip.syntax.message import Headers, SipRequest, SipResponse
from activecall.sip_edge.sip.syntax.uri import SCHEME_SIPS, NameAddr, SipUri, Uri

MAX_FORWARDS = 70
# RFC 3261 section 12.2.1.1 leaves the first local CSeq to us; below 2**31 with room to grow.
_MAX_INITIAL_CSEQ = 2**16
# Requests that may change the remote target (RFC 3261 section 12.2, RFC 3311, RFC 3515, RFC 6665).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


class DialogError(ValueError):
    """A message cannot create or continue this dialog."""


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def new_tag() -> str:
    """A From/To tag with at least 32 bits of randomness (RFC 3261 section 19.3)."""
    return tokens.token_hex(5)


def without_tag(address: NameAddr) -> NameAddr:
    params = {k: v for k, v in address.params.items() if k.lower() != "tag"}
    return NameAddr(address.uri, address.display_name, params)


def _contact_uri(message: SipRequest | SipResponse) -> Uri:
    contacts = message.contacts
    if not contacts:
        raise DialogError("no Contact to use as remote target")
    return contacts[0].uri


@dataclass
class Dialog:
    """One dialog as seen from our side (RFC 3261 section 12.1)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr
    remote_uri: NameAddr
    remote_target: Uri
    local_contact: NameAddr
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    secure: bool = False
    is_uac: bool = False
    state: DialogState = DialogState.CONFIRMED

    @property
    def key(self) -> tuple[str, str, str]:
        """Dialog ID: Call-ID, local tag, remote tag (RFC 3261 section 12)."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(
        cls,
        request: SipRequest,
        local_tag: str,
        local_contact: NameAddr,
        state: DialogState = DialogState.CONFIRMED,
    ) -> Dialog:
        """The dialog a UAS creates with its 1xx or 2xx to ``request`` (RFC 3261 section 12.1.1)."""
        remote_tag = request.from_.tag
        if not remote_tag:
            raise DialogError("request without a From tag")  # RFC 2543 peers are not supported
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=without_tag(request.to),
            remote_uri=without_tag(request.from_),
            remote_target=_contact_uri(request),
            local_contact=local_contact,
            route_set=list(request.record_routes),
            local_seq=tokens.randbelow(_MAX_INITIAL_CSEQ) + 1,
            remote_seq=request.cseq.number,
            secure=isinstance(request.uri, SipUri) and request.uri.scheme == SCHEME_SIPS,
            is_uac=False,
            state=state,
        )

    @classmethod
    def as_uac(
        cls, request: SipRequest, response: SipResponse, state: DialogState = DialogState.CONFIRMED
    ) -> Dialog:
        """The dialog a UAC learns from a 1xx with a To tag or a 2xx (RFC 3261 section 12.1.2)."""
        remote_tag = response.to.tag
        if not remote_tag:
            raise DialogError("response without a To tag")
        local_tag = request.from_.tag
        if not local_tag:
            raise DialogError("request without a From tag")
        local_contacts = request.contacts
        if not local_contacts:
            raise DialogError("request without a Contact")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=without_tag(request.from_),
            remote_uri=without_tag(request.to),
            remote_target=_contact_uri(response),
            local_contact=local_contacts[0],
            route_set=list(reversed(response.record_routes)),
            local_seq=request.cseq.number,
            remote_seq=None,
            secure=isinstance(request.uri, SipUri) and request.uri.scheme == SCHEME_SIPS,
            is_uac=True,
            state=state,
        )

    # ---------------------------------------------------------------- receiving

    def accept_request(self, request: SipRequest) -> bool:
        """Check and record the CSeq of an in-dialog request; False means answer 500 (RFC 3261
        section 12.2.2). ACK and CANCEL carry the number of the request they belong to."""
        if request.method in ("ACK", "CANCEL"):
            return True
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq:
            return False
        self.remote_seq = number
        return True

    def refresh_target(self, message: SipRequest | SipResponse) -> None:
        """Take the Contact of a target refresh request or its 2xx as the new remote target."""
        contacts = message.contacts
        if contacts:
            self.remote_target = contacts[0].uri

    # ---------------------------------------------------------------- sending

    @property
    def next_hop(self) -> Uri:
        """Where an in-dialog request is sent: the first route, else the remote target (RFC 3261
        section 12.2.1.1 with section 8.1.2)."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    def _request_uri_and_routes(self) -> tuple[Uri, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0].uri
        if isinstance(first, SipUri) and first.lr:
            return self.remote_target, [str(route) for route in self.route_set]
        # Strict routing: the first route becomes the Request-URI, the remote target the last route.
        rest = [str(route) for route in self.route_set[1:]]
        return first, [*rest, f"<{self.remote_target}>"]

    def create_request(self, method: str, cseq: int | None = None) -> SipRequest:
        """A request within the dialog, without Via (RFC 3261 section 12.2.1.1). The CSeq goes up by
        one unless ``cseq`` is given (an ACK or CANCEL reuses its INVITE's)."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        uri, routes = self._request_uri_and_routes()
        headers = Headers()
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", str(MAX_FORWARDS))
        headers.add("From", str(self.local_uri.with_params(tag=self.local_tag)))
        headers.add("To", str(self.remote_uri.with_params(tag=self.remote_tag)))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if method in TARGET_REFRESH_METHODS:
            headers.add("Contact", str(self.local_contact))
        return SipRequest(method, uri, headers)

    def create_ack(self, invite: SipRequest) -> SipRequest:
        """The ACK for a 2xx to ``invite`` (RFC 3261 section 13.2.2.4): the INVITE's CSeq number,
        the dialog's route set, and the INVITE's credentials."""
        ack = self.create_request("ACK", cseq=invite.cseq.number)
        for name in ("Authorization", "Proxy-Authorization"):
            for value in invite.headers.get_all(name):
                ack.headers.add(name, value)
        return ack
