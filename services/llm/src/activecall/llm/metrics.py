"""Prometheus metrics of the llm service (prefix ``activecall_llm_``).

Label values are bounded: provider names, turn results, the tool names of :mod:`activecall.llm.tools`
(anything else counts as ``unknown``) and error kinds.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from activecall.metrics import TURN_BUCKETS

TIME_TO_FIRST_TOKEN = Histogram(
    "activecall_llm_time_to_first_token_seconds",
    "Time from sending a model request to its first text",
    ["provider"],
    buckets=TURN_BUCKETS,
)
TURNS = Counter(
    "activecall_llm_turns_total",
    "Agent turns by result: ok, cancelled (barge-in), apology (the provider failed), silent (nothing said)",
    ["result"],
)
TOOL_CALLS = Counter("activecall_llm_tool_calls_total", "Tool calls executed, by tool", ["tool"])
PROVIDER_ERRORS = Counter(
    "activecall_llm_provider_errors_total",
    "Failed model requests by kind: rate_limited, overloaded, server_error, timeout, connection, "
    "bad_request, stream_error, other",
    ["provider", "kind"],
)
