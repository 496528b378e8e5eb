"""What our user agent supports, as it says in Allow, Accept and Supported (RFC 3261 sections 20.1,
20.5 and 20.37): the methods it answers, the bodies it reads, and session timers (RFC 4028)."""

from __future__ import annotations

CONTENT_SDP = "application/sdp"
CONTENT_DTMF_RELAY = "application/dtmf-relay"
CONTENT_DTMF = "application/dtmf"
CONTENT_SIPFRAG = "message/sipfrag"

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "NOTIFY", "REFER", "UPDATE")
ACCEPTED_TYPES = (CONTENT_SDP, CONTENT_DTMF_RELAY, CONTENT_DTMF, CONTENT_SIPFRAG)
SUPPORTED = "timer"
ALLOW = ", ".join(ALLOWED_METHODS)


def capability_headers() -> list[tuple[str, str]]:
    return [("Allow", ALLOW), ("Accept", ", ".join(ACCEPTED_TYPES)), ("Supported", SUPPORTED)]


def allow_headers() -> list[tuple[str, str]]:
    return [("Allow", ALLOW)]
