"""The gateway starts the trace of a turn: a PRODUCER span whose context is the record's traceparent."""

from __future__ import annotations

from connector_fakes import FakeProducer, settings
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.testclient import TestClient

from connectors.gateway.app import create_app
from streams.tracing import setup_tracing


def test_publish_span_is_a_producer_span_and_its_context_travels_in_the_headers():
    s = settings(gateway_api_keys={"k": "acme"})
    setup_tracing(s, "chatstream-gateway")  # idempotent; the lifespan calls it too
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer = FakeProducer()
    with TestClient(create_app(s, producer, sse_tail=False)) as client:
        r = client.post("/v1/messages", json={"text": "hi"}, headers={"X-API-Key": "k"})
    message_id = r.json()["message_id"]
    spans = [sp for sp in exporter.get_finished_spans() if sp.attributes.get("messaging.message.id") == message_id]
    assert len(spans) == 1
    span = spans[0]
    assert span.name == "chat.inbound publish" and span.kind is SpanKind.PRODUCER
    assert span.attributes["messaging.system"] == "kafka"
    assert span.attributes["messaging.destination.name"] == "chat.inbound"
    traceparents = [v.decode() for k, v in producer.sent[0]["headers"] if k == "traceparent"]
    assert len(traceparents) == 1
    _, trace_id, span_id, _ = traceparents[0].split("-")
    assert int(trace_id, 16) == span.context.trace_id and int(span_id, 16) == span.context.span_id
