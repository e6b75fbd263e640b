"""Jaeger takes spans over OTLP/gRPC and gives them back by trace id from its query API."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from stack.jaeger import Jaeger
from streams.config import Settings


@pytest.mark.stack
def test_span_round_trip(settings: Settings) -> None:
    service_name = f"stack-test-{uuid.uuid4().hex[:8]}"
    # A provider of our own, not the global one: other tests' tracing set-up stays untouched.
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPSpanExporter(endpoint=f"http://{settings.bind_host}:{settings.jaeger_otlp_grpc_port}", insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.stack")
    with tracer.start_as_current_span("chat.inbound process", kind=SpanKind.CONSUMER) as span:
        span.set_attribute("messaging.system", "kafka")
        with tracer.start_as_current_span("redis GET"):
            pass
        trace_id = format(span.get_span_context().trace_id, "032x")
    assert provider.force_flush(10_000)
    provider.shutdown()

    url = f"http://{settings.bind_host}:{settings.jaeger_query_port}/api/traces/{trace_id}"
    deadline = time.monotonic() + 20
    while True:  # the collector batches before storing: poll, bounded
        response = httpx.get(url, timeout=5)
        if response.status_code == 200 and response.json().get("data"):
            break
        assert time.monotonic() < deadline, f"trace {trace_id} not in Jaeger: {response.status_code} {response.text[:200]}"
        time.sleep(0.2)

    (trace,) = response.json()["data"]
    assert trace["traceID"] == trace_id
    spans = {s["operationName"]: s for s in trace["spans"]}
    assert set(spans) == {"chat.inbound process", "redis GET"}
    child_refs = spans["redis GET"]["references"]
    assert child_refs[0]["refType"] == "CHILD_OF" and child_refs[0]["spanID"] == spans["chat.inbound process"]["spanID"]
    assert {p["serviceName"] for p in trace["processes"].values()} == {service_name}


def test_config_binds_loopback_on_configured_ports(tmp_path) -> None:
    settings = Settings(home=tmp_path, jaeger_otlp_grpc_port=14317, jaeger_otlp_http_port=14318,
                        jaeger_query_port=26686, jaeger_query_grpc_port=26685)
    config = yaml.safe_load(Jaeger(settings).render_config())
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "127.0.0.1:14317"
    assert protocols["http"]["endpoint"] == "127.0.0.1:14318"
    query = config["extensions"]["jaeger_query"]
    assert query["http"]["endpoint"] == "127.0.0.1:26686"
    assert query["grpc"]["endpoint"] == "127.0.0.1:26685"
    assert config["extensions"]["jaeger_storage"]["backends"][query["storage"]["traces"]]["memory"]["max_traces"] > 0
    pipeline = config["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"] and pipeline["exporters"] == ["jaeger_storage_exporter"]
    assert config["service"]["telemetry"]["metrics"]["level"] == "none"  # no stray :8888 listener
