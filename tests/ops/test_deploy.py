"""The deployment files: compose, Prometheus, Grafana dashboards and the metrics they query."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
METRIC_MODULES = [
    "activecall.metrics",
    "activecall.sip_edge.metrics",
    "activecall.media.metrics",
    "activecall.asr.metrics",
    "activecall.tts.metrics",
    "activecall.llm.metrics",
    "activecall.api.metrics",
]


def test_compose_file_is_valid() -> None:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing: make setup installs it"
    command = [compose, "-f", str(DEPLOY / "docker-compose.yml"), "--env-file", str(DEPLOY / ".env.example")]
    result = subprocess.run([*command, "config", "-q"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_env_example_lists_every_variable_the_compose_file_reads() -> None:
    used = set(re.findall(r"\$\{(\w+)", (DEPLOY / "docker-compose.yml").read_text()))
    listed = {
        line.split("=", 1)[0]
        for line in (DEPLOY / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert used <= listed, used - listed


def test_prometheus_config_is_valid() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make setup installs prometheus"
    result = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_are_what_the_generator_writes() -> None:
    sys.path.insert(0, str(DEPLOY / "grafana"))
    try:
        build = importlib.import_module("build_dashboards")
    finally:
        sys.path.pop(0)
    rendered = build.render()
    on_disk = {p.name: p.read_text() for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")}
    assert on_disk == rendered, "run: python deploy/grafana/build_dashboards.py"
    assert set(rendered) == {"overview.json", "media.json", "pipeline.json", "workers.json"}


def dashboards() -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))]


def test_every_dashboard_uses_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = provisioned["datasources"]
    for board in dashboards():
        for panel in board["panels"]:  # type: ignore[attr-defined]
            assert panel["datasource"] == {"type": source["type"], "uid": source["uid"]}
            assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])


def exported_names() -> set[str]:
    for module in METRIC_MODULES:
        importlib.import_module(module)
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_every_metric_a_dashboard_queries_is_exported() -> None:
    exported = exported_names()
    queried = set()
    for board in dashboards():
        for panel in board["panels"]:  # type: ignore[attr-defined]
            for target in panel["targets"]:
                queried.update(re.findall(r"\bactivecall_[a-z0-9_]+", target["expr"]))
    assert queried, "no query names a metric"
    missing = sorted(queried - exported)
    assert not missing, missing


def test_the_metric_catalogue_is_current() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        catalogue = importlib.import_module("metrics_catalogue")
    finally:
        sys.path.pop(0)
    assert (REPO / "docs" / "metrics.md").read_text() == catalogue.render(), (
        "run: python scripts/metrics_catalogue.py > docs/metrics.md"
    )
    assert "activecall_turn_latency_seconds" in catalogue.render()
