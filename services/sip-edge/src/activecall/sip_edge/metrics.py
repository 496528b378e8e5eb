"""Prometheus metrics of the SIP edge (prefix ``activecall_sip_``).

The call counts are ``activecall_calls_total`` and ``activecall_calls_active``, without ``sip_``: a call is
what an operator counts, whichever protocol carried it (ARCHITECTURE.md, "Metrics").

Label values are bounded: known method names (anything else is ``other``), status codes, directions,
results, transports and the configured registration names; never call ids or numbers.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from activecall.metrics import LATENCY_BUCKETS

_M = TypeVar("_M", Counter, Gauge, Histogram)

KNOWN_METHODS = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY")
    + ("PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE")
)

REQUESTS = Counter(
    "activecall_sip_requests_total", "SIP requests received (in) and sent (out)", ["method", "direction"]
)
RESPONSES = Counter(
    "activecall_sip_responses_total", "SIP responses received (in) and sent (out)", ["code", "direction"]
)
RETRANSMISSIONS = Counter(
    "activecall_sip_retransmissions_total", "SIP messages sent again by a timer", ["kind"]
)
TRANSACTION_TIMEOUTS = Counter(
    "activecall_sip_transaction_timeouts_total", "Client transactions that ended with no response", ["method"]
)
TRANSPORT_ERRORS = Counter(
    "activecall_sip_transport_errors_total", "Messages that could not be sent", ["transport"]
)
PARSE_ERRORS = Counter(
    "activecall_sip_parse_errors_total",
    "Malformed SIP messages received (answered 400 or dropped)",
    ["transport"],
)
ACL_REJECTIONS = Counter("activecall_sip_acl_rejections_total", "INVITEs refused by the source ACL (403)")
CAPACITY_REJECTIONS = Counter(
    "activecall_sip_capacity_rejections_total",
    "Calls refused with 503, once each, by why: draining, max_calls, or the role with no room"
    " (media, asr, llm, tts)",
    ["direction", "reason"],
)
CALLS = Counter("activecall_calls_total", "Calls by direction and result", ["direction", "result"])
CALLS_ACTIVE = Gauge("activecall_calls_active", "Calls held by this edge", ["direction"])
DIALOGS = Gauge("activecall_sip_dialogs", "Confirmed SIP dialogs held by this edge")
CALL_SETUP = Histogram(
    "activecall_sip_call_setup_seconds",
    "Inbound: INVITE received to 200 OK sent; outbound: originate taken to 200 OK received",
    ["direction"],
    buckets=LATENCY_BUCKETS,
)
LEG_REQUEST = Histogram(
    "activecall_sip_leg_request_seconds",
    "Round trip of a leg request to a media worker",
    ["type"],
    buckets=LATENCY_BUCKETS,
)
MEDIA_MOVES = Counter(
    "activecall_sip_media_moves_total",
    "Calls moved to a leg on another media worker (reason: lost, draining) and how that went",
    ["reason", "result"],
)
CALLS_ADOPTED = Counter(
    "activecall_sip_calls_adopted_total",
    "Calls this edge took over from an edge that died or drains (how: request, a request of the dialog"
    " came here; sweep, found in calls:active)",
    ["how"],
)
HANDLER_DECISIONS = Counter(
    "activecall_sip_handler_decisions_total", "Inbound handler outcomes", ["handler", "outcome"]
)
REGISTRATION_UP = Gauge("activecall_sip_registration_up", "1 while a registration is bound", ["name"])
REGISTRATIONS = Counter("activecall_sip_registrations_total", "REGISTER outcomes", ["name", "result"])


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


# Label lookups cost more than the increments; the children are cached per (bounded) label value.


def child(metric: _M, *values: str) -> _M:
    """``metric.labels(*values)``, looked up once per label set."""
    found: _M = _child(metric, values)
    return found


@functools.cache
def _child(metric: MetricWrapperBase, values: tuple[str, ...]) -> Any:
    return metric.labels(*values)


def request_counter(method: str, direction: str) -> Counter:
    return child(REQUESTS, method_label(method), direction)


def response_counter(status: int, direction: str) -> Counter:
    return child(RESPONSES, str(status), direction)
