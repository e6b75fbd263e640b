"""Feedback becomes a Prometheus metric where it is published: the gateway counts what Kafka acknowledged.

A child process installs the same Prometheus reader `chatstream gateway` installs (the meter provider
is global, once per process), posts web feedback through the real app with the fake producer, and
prints the exposition text.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent

SCRIPT = r'''
import sys
sys.path.insert(0, sys.argv[1])
from opentelemetry import metrics as otel
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import REGISTRY, generate_latest
otel.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))

from starlette.testclient import TestClient
from connector_fakes import FailingProducer, FakeProducer, settings
from connectors.gateway.app import create_app

s = settings(gateway_api_keys={"key-acme": "acme"})
key = {"X-API-Key": "key-acme"}
with TestClient(create_app(s, FakeProducer(), sse_tail=False)) as client:
    turn = client.post("/v1/messages", json={"text": "hi", "session_id": "s1"}, headers=key).json()
    fb = {"message_id": turn["message_id"], "session_id": turn["session_id"]}
    for body in ({"kind": "up"}, {"kind": "down"}, {"kind": "down"}, {"kind": "csat", "score": 4}):
        assert client.post("/v1/feedback", json={**fb, **body}, headers=key).status_code == 202
with TestClient(create_app(s, FailingProducer(), sse_tail=False)) as client:  # Kafka refuses: not counted
    assert client.post("/v1/feedback", json={**fb, "kind": "up"}, headers=key).status_code == 503
print(generate_latest(REGISTRY).decode())
'''


def test_gateway_counts_published_feedback_by_kind_and_channel() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(HERE)], capture_output=True, text=True, timeout=120,
                         cwd=HERE.parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    samples = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_scope")))): s.value
               for family in text_string_to_metric_families(out.stdout) for s in family.samples}
    web = ("channel", "web")
    assert samples[("chatstream_feedback_total", (web, ("kind", "THUMBS_UP")))] == 1
    assert samples[("chatstream_feedback_total", (web, ("kind", "THUMBS_DOWN")))] == 2
    assert samples[("chatstream_feedback_total", (web, ("kind", "CSAT")))] == 1
    assert samples[("chatstream_feedback_csat_sum", (web,))] == 4
