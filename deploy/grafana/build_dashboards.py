"""Writes the Grafana dashboards of deploy/grafana/dashboards from the panel lists below.

Run ``python deploy/grafana/build_dashboards.py`` after changing a panel; a test checks that the
JSON files are what this script writes and that every metric a query names is exported.
"""

from __future__ import annotations

import json
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "activecall-prometheus"}
FOLDER = Path(__file__).parent / "dashboards"

# (title, unit, [(legend, expr)])
Panel = tuple[str, str, list[tuple[str, str]]]


def q(p: float, metric: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({p}, sum by ({group}) (rate({metric}_bucket[5m])))"


DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "overview": (
        "active-call: Overview",
        [
            (
                "Calls active",
                "short",
                [("{{direction}}", "sum by (direction) (activecall_calls_active)")],
            ),
            (
                "Call rate by result",
                "cps",
                [
                    (
                        "{{direction}} {{result}}",
                        "sum by (direction, result) (rate(activecall_calls_total[5m]))",
                    )
                ],
            ),
            (
                "SIP responses by code",
                "reqps",
                [("{{code}}", "sum by (code) (rate(activecall_sip_responses_total[5m]))")],
            ),
            (
                "SIP requests by method",
                "reqps",
                [("{{method}}", "sum by (method) (rate(activecall_sip_requests_total[5m]))")],
            ),
            (
                "Turn latency (end of caller speech to first agent packet)",
                "s",
                [(f"p{int(p * 100)}", q(p, "activecall_turn_latency_seconds")) for p in (0.5, 0.95, 0.99)],
            ),
            (
                "Worker load by role",
                "percentunit",
                [
                    (
                        "{{role}}",
                        "sum by (role) (activecall_worker_load) / sum by (role) (activecall_worker_capacity)",
                    )
                ],
            ),
        ],
    ),
    "media": (
        "active-call: Media",
        [
            (
                "RTP packets",
                "pps",
                [("{{direction}}", "sum by (direction) (rate(activecall_rtp_packets_total[1m]))")],
            ),
            (
                "RTP bytes",
                "Bps",
                [("{{direction}}", "sum by (direction) (rate(activecall_rtp_bytes_total[1m]))")],
            ),
            (
                "Jitter buffer late and lost",
                "pps",
                [
                    ("late", "sum(rate(activecall_media_jitter_buffer_late_total[1m]))"),
                    ("lost", "sum(rate(activecall_media_jitter_buffer_lost_total[1m]))"),
                ],
            ),
            (
                "SRTP failures",
                "pps",
                [("{{kind}}", "sum by (kind) (rate(activecall_srtp_failures_total[1m]))")],
            ),
            (
                "Send interval jitter",
                "s",
                [(f"p{int(p * 100)}", q(p, "activecall_rtp_send_jitter_seconds")) for p in (0.5, 0.99)],
            ),
            (
                "Legs and barge-ins",
                "short",
                [
                    ("legs", "sum(activecall_media_legs_active)"),
                    ("barge-ins/min", "sum(rate(activecall_media_barge_ins_total[5m])) * 60"),
                ],
            ),
        ],
    ),
    "pipeline": (
        "active-call: Pipeline",
        [
            (
                "ASR final latency",
                "s",
                [(f"p{int(p * 100)}", q(p, "activecall_asr_final_latency_seconds")) for p in (0.5, 0.95)],
            ),
            (
                "LLM time to first token",
                "s",
                [
                    (f"p{int(p * 100)}", q(p, "activecall_llm_time_to_first_token_seconds"))
                    for p in (0.5, 0.95)
                ],
            ),
            (
                "TTS time to first audio",
                "s",
                [
                    (f"p{int(p * 100)}", q(p, "activecall_tts_time_to_first_audio_seconds"))
                    for p in (0.5, 0.95)
                ],
            ),
            ("Bus lag", "s", [("p99 {{stream}}", q(0.99, "activecall_bus_lag_seconds", "stream"))]),
            (
                "ASR real-time factor",
                "percentunit",
                [
                    (
                        "rtf",
                        "sum(rate(activecall_asr_decode_seconds_total[5m])) / sum(rate(activecall_asr_audio_seconds_total[5m]))",
                    )
                ],
            ),
            (
                "LLM turns by result",
                "short",
                [("{{result}}", "sum by (result) (rate(activecall_llm_turns_total[5m]))")],
            ),
        ],
    ),
    "workers": (
        "active-call: Workers",
        [
            (
                "Heartbeats",
                "short",
                [("{{role}}", "sum by (role) (rate(activecall_worker_heartbeats_total[1m]))")],
            ),
            ("Live workers", "short", [("{{role}}", "count by (role) (activecall_worker_capacity)")]),
            (
                "Sessions claimed and taken over",
                "short",
                [
                    ("claimed {{role}}", "sum by (role) (increase(activecall_sessions_claimed_total[5m]))"),
                    (
                        "taken over {{role}}",
                        "sum by (role) (increase(activecall_sessions_taken_over_total[5m]))",
                    ),
                ],
            ),
            ("Sessions active", "short", [("{{role}}", "sum by (role) (activecall_sessions_active)")]),
            (
                "Redis reconnects",
                "short",
                [("{{role}}", "sum by (role) (increase(activecall_redis_reconnects_total[5m]))")],
            ),
            ("Draining workers", "short", [("{{role}}", "sum by (role) (activecall_worker_draining)")]),
        ],
    ),
}


def panel(index: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict[str, object]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, object]:
    return {
        "uid": f"activecall-{uid}",
        "title": title,
        "tags": ["active-call"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "panels": [panel(i, *p) for i, p in enumerate(panels)],
    }


def render() -> dict[str, str]:
    return {
        f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
        for uid, (title, panels) in DASHBOARDS.items()
    }


def main() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (FOLDER / name).write_text(text)
        print(f"wrote {FOLDER / name}")


if __name__ == "__main__":
    main()
