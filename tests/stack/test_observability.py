"""The Grafana dashboard and the Prometheus alert rules only use metric names the worker and gateway export.

The exported names come from a real Prometheus exporter: a child process installs the same
OpenTelemetry Prometheus reader the worker uses, records through every function of
``streams/metrics.py`` and prints the exposition text. The names the dashboard and rules use come from
their PromQL (every identifier that is a chatstream metric). ``promtool check rules`` also runs when
promtool is on PATH (Debian's ``prometheus`` package ships it; see the issue note).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "stack" / "observability"

EXPORT_SCRIPT = r'''
import asyncio
from opentelemetry import metrics as otel
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import REGISTRY, generate_latest

otel.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
from processors.circuit import CircuitBreaker
from streams import metrics
from streams.config import Settings
from streams.inflight import InFlightWindow

class ProbeWithLag:  # the lag gauge's Kafka reader, injected: this process has no Kafka
    def stage_lag(self, timeout_s):
        return {"chat.inbound": 3}

metrics.stage_processed("enrich", 0.01, "ok")
metrics.dead_lettered("enrich", "DecodeError")
metrics.transient_retry("enrich", "redis")
metrics.reply_produced("ANSWERED", 120, "m", 10, 5)
metrics.llm_call("openai", "ok")
metrics.retrieval_score(0.7)
metrics.validation_failed("grounded")
metrics.feedback_received("CSAT", "web", 4)
metrics.register_circuit_gauge({"openai": CircuitBreaker()})
metrics.register_lag_gauge(Settings(), probe=ProbeWithLag())

async def windows():
    metrics.register_inflight_gauge({"enrich": InFlightWindow(4, on_release=lambda msg: None)})
    print(generate_latest(REGISTRY).decode())
asyncio.run(windows())
'''


def exported_names() -> set[str]:
    out = subprocess.run([sys.executable, "-c", EXPORT_SCRIPT], capture_output=True, text=True, check=True, cwd=ROOT,
                         timeout=120).stdout
    return {line.split("{")[0].split(" ")[0] for line in out.splitlines() if line and not line.startswith("#")}


METRIC = re.compile(r"\b(chatstream_[a-z0-9_]+|up)\b")


def used_names() -> dict[str, set[str]]:
    dashboard = json.loads((OBS / "grafana" / "dashboards" / "chatstream.json").read_text())
    rules = yaml.safe_load((OBS / "alerts.yml").read_text())
    used: dict[str, set[str]] = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in METRIC.findall(target["expr"]):
                used.setdefault(name, set()).add(f"dashboard: {panel['title']}")
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in METRIC.findall(rule["expr"]):
                used.setdefault(name, set()).add(f"alert: {rule['alert']}")
    return used


def test_every_metric_the_dashboard_and_alerts_use_is_exported() -> None:
    exported = exported_names()
    assert "chatstream_consumer_lag" in exported and "chatstream_feedback_total" in exported
    used = used_names()
    assert len(used) >= 12
    unknown = {name: sorted(where) for name, where in used.items() if name != "up" and name not in exported}
    assert not unknown, f"not exported by the worker or gateway: {unknown}"


def test_alerts_cover_what_an_operator_is_paged_for() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load((OBS / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    exprs = " ".join(r["expr"] for r in rules.values())
    for needle in ("histogram_quantile(0.99", 'outcome!="ok"', 'status="FALLBACK"', "chatstream_deadletters_total",
                   "chatstream_llm_circuit_state", "chatstream_consumer_lag"):
        assert needle in exprs, needle
    assert "ChatstreamNoReplies" in rules
    promtool = shutil.which("promtool")
    if promtool:  # an extra check where promtool exists; the name check above runs everywhere
        subprocess.run([promtool, "check", "rules", str(OBS / "alerts.yml")], check=True, capture_output=True)
        subprocess.run([promtool, "check", "config", str(OBS / "prometheus.yml")], check=True, capture_output=True)


def test_prometheus_scrapes_the_ports_the_settings_name() -> None:
    from streams.config import Settings

    s = Settings.model_construct()
    config = yaml.safe_load((OBS / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets["chatstream-worker"] == [f"{s.bind_host}:{s.metrics_port}"]
    assert targets["chatstream-gateway"] == [f"{s.bind_host}:{s.gateway_metrics_port}"]
    assert config["rule_files"] == ["alerts.yml"]
