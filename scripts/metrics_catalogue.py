"""Prints docs/metrics.md: every metric the services export, from their own registries.

Run ``python scripts/metrics_catalogue.py > docs/metrics.md``; a test checks the file is current.
"""

from __future__ import annotations

import importlib

from prometheus_client import REGISTRY

MODULES = {
    "every service": "activecall.metrics",
    "sip-edge": "activecall.sip_edge.metrics",
    "media": "activecall.media.metrics",
    "asr": "activecall.asr.metrics",
    "llm": "activecall.llm.metrics",
    "tts": "activecall.tts.metrics",
    "api": "activecall.api.metrics",
}
PREFIXES = {
    "every service": (
        "activecall_bus_",
        "activecall_redis_",
        "activecall_worker_",
        "activecall_sessions_",
        "activecall_reaper_",
    ),
    "sip-edge": ("activecall_sip_", "activecall_calls_"),
    "media": (
        "activecall_rtp_",
        "activecall_rtcp_",
        "activecall_srtp_",
        "activecall_media_",
        "activecall_turn_",
    ),
    "asr": ("activecall_asr_",),
    "llm": ("activecall_llm_", "activecall_playbook_"),
    "tts": ("activecall_tts_",),
    "api": ("activecall_api_",),
}


def families() -> list[tuple[str, str, str, list[str]]]:
    for module in MODULES.values():
        importlib.import_module(module)
    declared: dict[str, list[str]] = {}
    # A metric's labels show in its samples only once a child exists; the declaration always has them.
    for collector in list(REGISTRY._collector_to_names):
        labelnames = getattr(collector, "_labelnames", None)
        if labelnames is not None:
            declared[getattr(collector, "_name", "")] = sorted(labelnames)
    rows = []
    for family in REGISTRY.collect():
        if not family.name.startswith("activecall_"):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        sampled = {k for s in family.samples for k in s.labels if k != "le"}
        labels = declared.get(family.name, sorted(sampled))
        rows.append((name, family.type, family.documentation, labels))
    return sorted(rows)


def render() -> str:
    lines = [
        "# Metrics",
        "",
        "Every process serves Prometheus metrics on `/metrics` (the api on `http_addr`, the others on the",
        "ports of `[metrics]`). Names start with `activecall_`; counters end in `_total`, durations are in",
        "seconds. Label values are bounded (roles, directions, methods, codes, kinds): never call ids or",
        "phone numbers. Prometheus adds `role` and `worker` from the service discovery. This page is",
        "written by `scripts/metrics_catalogue.py`.",
    ]
    rows = families()
    for owner, prefixes in PREFIXES.items():
        lines += ["", f"## {owner}", "", "| name | type | labels | meaning |", "| --- | --- | --- | --- |"]
        for name, kind, doc, labels in rows:
            if name.startswith(prefixes):
                lines.append(f"| `{name}` | {kind} | {', '.join(labels) or '-'} | {doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
