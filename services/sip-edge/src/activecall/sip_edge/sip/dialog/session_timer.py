"""Session timers (RFC 4028): the Session-Expires and Min-SE fields and the negotiation rules.

Pure functions; the session in :mod:`activecall.sip_edge.sip.dialog.session` runs the timers. The refresher is
named by transaction role (``uac``/``uas`` of the request that negotiated it), so each side works out
whether it refreshes from the role it played in that request.
"""

from __future__ import annotations

from dataclasses import dataclass

from activecall.sip_edge.sip.syntax.message import SipRequest, SipResponse
from activecall.sip_edge.sip.syntax.uri import SipParseError

# RFC 4028 section 4: Min-SE may not be lower than 90 seconds.
MIN_SE = 90
STATUS_INTERVAL_TOO_SMALL = 422
OPTION_TAG = "timer"
REFRESHER_UAC = "uac"
REFRESHER_UAS = "uas"


class SessionTimerError(SipParseError):
    """A malformed Session-Expires or Min-SE value."""


class IntervalTooBrief(Exception):
    """The requested interval is below our Min-SE: answer 422 with ``min_se`` (RFC 4028 section 8.1)."""

    def __init__(self, min_se: int) -> None:
        super().__init__(f"session interval below {min_se} s")
        self.min_se = min_se


def _seconds(text: str, what: str) -> int:
    text = text.strip(" \t")
    if not text.isdigit() or len(text) > 10:
        raise SessionTimerError(f"Bad {what}")
    return int(text)


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """``Session-Expires: delta-seconds [;refresher=uac|uas]`` (RFC 4028 section 4)."""

    interval: int
    refresher: str | None = None

    @classmethod
    def parse(cls, value: str) -> SessionExpires:
        delta, *params = value.split(";")
        refresher = None
        for param in params:
            name, _, param_value = param.partition("=")
            if name.strip(" \t").lower() == "refresher":
                refresher = param_value.strip(" \t").lower()
                if refresher not in (REFRESHER_UAC, REFRESHER_UAS):
                    raise SessionTimerError("Bad refresher")
        return cls(_seconds(delta, "Session-Expires"), refresher)

    def __str__(self) -> str:
        return f"{self.interval}" if self.refresher is None else f"{self.interval};refresher={self.refresher}"


def parse_min_se(value: str) -> int:
    """``Min-SE: delta-seconds`` (RFC 4028 section 5); parameters are ignored."""
    return _seconds(value.split(";")[0], "Min-SE")


def supports_timer(message: SipRequest | SipResponse) -> bool:
    tags = [t.strip(" \t").lower() for v in message.headers.get_all("Supported") for t in v.split(",")]
    tags += [t.strip(" \t").lower() for v in message.headers.get_all("Require") for t in v.split(",")]
    return OPTION_TAG in tags


def session_expires(message: SipRequest | SipResponse) -> SessionExpires | None:
    value = message.headers.get("Session-Expires")
    return None if value is None else SessionExpires.parse(value)


def negotiate_uas(request: SipRequest, min_se: int = MIN_SE) -> SessionExpires | None:
    """What a UAS puts in its 2xx to a request that asks for a session timer (RFC 4028 section 9),
    None when the request asks for none. Raises :class:`IntervalTooBrief` for a too short interval."""
    asked = session_expires(request)
    if asked is None:
        return None
    if asked.interval < min_se:
        raise IntervalTooBrief(min_se)
    refresher = asked.refresher
    if refresher is None:
        # The UAC refreshes when it can; otherwise it has to be us.
        refresher = REFRESHER_UAC if supports_timer(request) else REFRESHER_UAS
    return SessionExpires(asked.interval, refresher)


def expiry_delay(interval: float) -> float:
    """When the side that does not refresh gives up: the interval minus min(32 s, a third of it)
    (RFC 4028 section 10)."""
    return interval - min(32.0, interval / 3)


def refresh_delay(interval: float) -> float:
    """When the refresher sends its refresh: half the interval (RFC 4028 section 10)."""
    return interval / 2
