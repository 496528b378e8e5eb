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
    "Time from the end-of-turn decision to the final transcript (the recognizer's finish)",
    buckets=LATENCY_BUCKETS,
)
TURN_ENDS = Counter(
    "activecall_asr_turn_ends_total", "Ends of caller turns, by how they were decided", ["eot"]
)
TURN_SILENCE = Histogram(
    "activecall_asr_turn_silence_seconds",
    "Silence after the caller's last speech frame when the end of the turn was decided (media clock)",
    buckets=LATENCY_BUCKETS,
)
TURN_VERDICTS = Counter(
    "activecall_asr_turn_verdicts_total", "Verdicts of the end-of-turn judge at a pause", ["verdict"]
)
JUDGE_SECONDS = Histogram(
    "activecall_asr_turn_judge_seconds",
    "Time the end-of-turn judge took (text cues, and the Smart Turn model in that mode)",
    buckets=LATENCY_BUCKETS,
)
