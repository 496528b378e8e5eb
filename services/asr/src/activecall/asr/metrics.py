"""Metrics of the asr service (prefix ``activecall_asr_``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from activecall.metrics import LATENCY_BUCKETS

AUDIO_SECONDS = Counter(
    "activecall_asr_audio_seconds_total", "Seconds of caller audio fed to the recognizers"
)
DECODE_SECONDS = Counter(
    "activecall_asr_decode_seconds_total", "CPU-side seconds spent decoding (real-time factor numerator)"
)
FINALS = Counter("activecall_asr_finals_total", "Final transcripts emitted")
FINAL_LATENCY = Histogram(
    "activecall_asr_final_latency_seconds",
    "Time from the media worker's end-of-speech event to the final transcript",
    buckets=LATENCY_BUCKETS,
)
