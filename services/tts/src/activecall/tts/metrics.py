"""Metrics of the tts service (prefix ``activecall_tts_``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from activecall.metrics import LATENCY_BUCKETS

TIME_TO_FIRST_AUDIO = Histogram(
    "activecall_tts_time_to_first_audio_seconds",
    "Time from a piece of text on the say stream to its first audio chunk on audio:out",
    buckets=LATENCY_BUCKETS,
)
SYNTHESIS_SECONDS = Counter(
    "activecall_tts_synthesis_seconds_total", "Seconds spent synthesizing (cache misses)"
)
AUDIO_SECONDS = Counter("activecall_tts_audio_seconds_total", "Seconds of speech synthesized")
CACHE = Counter("activecall_tts_cache_lookups_total", "Phrase cache lookups", ["result"])
TURNS_CANCELLED = Counter(
    "activecall_tts_turns_cancelled_total", "Pieces whose synthesis a cancellation stopped"
)
PHRASES_LOADED = Counter(
    "activecall_tts_presynthesis_loaded_phrases_total",
    "Fixed playbook phrases another tts worker had synthesized, loaded from Redis instead of made again",
)
PRESYNTHESIZED = Counter(
    "activecall_tts_presynthesized_phrases_total",
    "Fixed playbook phrases synthesized ahead of calls (at start-up and when a playbook changes)",
)
PINNED = Gauge(
    "activecall_tts_cache_pinned_entries", "Phrase cache entries pinned by pre-synthesis (never evicted)"
)
