"""The offer that moves a call's audio to a new leg, and the answer kept once the peer accepted it.

RFC 3264 section 8: a new offer within the session keeps the o= session id and raises its version by
one, keeps every m-line in its place (a stream may not be removed, a refused one stays refused with
port 0), and may change the address and port of a stream. The audio stream offers only the codec
and telephone-event in use, so the peer has nothing to choose again. With SRTP it carries the new
worker's key in a new ``a=crypto`` (RFC 4568 section 7.1.4: a new key in a re-offer re-keys the
stream; the suite stays the one negotiated, whose 30-byte key and salt the worker made).
"""

from __future__ import annotations

from dataclasses import replace

from activecall.sip_edge.app.legs import Leg
from activecall.sip_edge.sip.syntax.sdp import (
    TELEPHONE_EVENT_8000,
    Answer,
    SessionDescription,
    build_offer,
)


def media_reoffer(previous: SessionDescription, answer: Answer, leg: Leg, address: str) -> SessionDescription:
    """Our last description ``previous`` with its audio stream (``answer.media_index``) moved to
    ``leg`` at ``address``, versioned one above ``previous``."""
    telephone_event = None
    if answer.telephone_event_pt is not None:
        telephone_event = replace(TELEPHONE_EVENT_8000, payload_type=answer.telephone_event_pt)
    suite = answer.local_crypto.suite if answer.local_crypto is not None else None
    fresh = build_offer(
        address,
        leg.port,
        codecs=[answer.codec],
        telephone_event=telephone_event,
        srtp=answer.srtp,
        crypto=[leg.crypto(1, suite)] if answer.srtp else None,
        direction=answer.direction,
    )
    media = list(previous.media)
    if 0 <= answer.media_index < len(media):
        media[answer.media_index] = fresh.media[0]
    else:
        media = fresh.media
    origin = replace(
        previous.origin,
        session_version=previous.origin.session_version + 1,
        address=fresh.origin.address,
        addrtype=fresh.origin.addrtype,
    )
    return replace(fresh, origin=origin, media=media)


def moved_answer(
    outcome: Answer, previous: Answer, offer: SessionDescription, leg: Leg, address: str
) -> Answer:
    """What the call keeps of the exchange: the peer's answer read against our ``offer``, and, when the
    call answered the first offer itself, the policy to answer the peer's next re-offer with, now
    pointing at the new leg (``update_answer`` versions from our last description: the offer)."""
    policy = previous.policy
    if policy is None:
        return outcome
    moved_policy = replace(policy, local_address=address, local_port=leg.port, crypto_factory=leg.crypto)
    return replace(outcome, sdp=offer, policy=moved_policy)
