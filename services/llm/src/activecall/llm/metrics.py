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
TURN_STAGES = Histogram(
    "activecall_turn_stage_seconds",
    "Each stage of an answer after the end of the caller's speech (activecall.llm.timings): end_of_turn, "
    "asr_final, llm_first_token, first_sentence, tts_first_audio, first_packet (the turn latency)",
    ["stage"],
    buckets=TURN_BUCKETS,
)
WITHDRAWN_REPLIES = Counter(
    "activecall_llm_withdrawn_replies_total",
    "Replies taken back because the caller spoke again before hearing them (merged with what followed)",
)
TOOL_CALLS = Counter("activecall_llm_tool_calls_total", "Tool calls executed, by tool", ["tool"])
PROVIDER_ERRORS = Counter(
    "activecall_llm_provider_errors_total",
    "Failed model requests by kind: rate_limited, overloaded, server_error, timeout, connection, "
    "bad_request, stream_error, other",
    ["provider", "kind"],
)
