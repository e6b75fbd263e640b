"""The lean OTLP encoder writes exactly the bytes of the SDK's encoder, for every field and type."""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from streams.otlp_encoding import encode_request, varint


def _provider(resource: Resource) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(resource=resource)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _varied_spans() -> list[ReadableSpan]:
    first, exported_first = _provider(Resource.create({"service.name": "chatstream-worker", "host.cores": 2}))
    second, exported_second = _provider(Resource({"service.name": "other"}, schema_url="https://schema/1"))
    a = first.get_tracer("chatstream.streams")
    b = first.get_tracer("chatstream.retrieval", "1.2", schema_url="https://schema/scope")
    a_again = first.get_tracer("chatstream.streams")  # another tracer object, the same scope: one group
    remote = SpanContext(0x0123456789ABCDEF0123456789ABCDEF, 0xFEDCBA9876543210, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("vendor", "x1"), ("k", "v")]))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with a.start_as_current_span("chat.inbound process", context=parent, kind=SpanKind.CONSUMER, attributes={
        "messaging.system": "kafka", "messaging.kafka.offset": 12345678901, "negative": -5, "zero": 0,
        "ratio": 0.25, "nan-free float": -1e300, "flag": True, "off": False, "empty": "", "unicode": "héllo ✓",
        "strings": ["a", "b"], "ints": (1, -2, 3), "floats": [0.5], "bools": [True, False], "no items": [],
        "long": "x" * 300,
    }) as span:
        span.add_event("retry", {"chatstream.step": "produce", "retry.attempt": 2})
        span.add_event("bare")
        with b.start_as_current_span("weaviate hybrid_search", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.ERROR, "breaker open"))
        with a_again.start_as_current_span("redis session.load", links=[Link(remote, {"why": "batch"}), Link(remote)]):
            pass
        with a.start_as_current_span("ok span") as ok:
            ok.set_status(Status(StatusCode.OK))
        try:
            with a.start_as_current_span("fails"):
                raise ValueError("boom")
        except ValueError:
            pass
    root = second.get_tracer("tests").start_span("", kind=SpanKind.PRODUCER)  # a root span, no name
    root.end()
    return [*exported_first.get_finished_spans(), *exported_second.get_finished_spans()]


def test_the_bytes_equal_the_sdk_encoders() -> None:
    spans = _varied_spans()
    assert encode_request(spans) == encode_spans(spans).SerializeToString()


def test_each_span_alone_and_in_any_order_equals_the_sdk_encoder() -> None:
    spans = _varied_spans()
    for span in spans:
        assert encode_request([span]) == encode_spans([span]).SerializeToString(), span.name
    reordered = spans[::-1]
    assert encode_request(reordered) == encode_spans(reordered).SerializeToString()
    assert encode_request([]) == encode_spans([]).SerializeToString() == b""


def test_an_attribute_the_sdk_encoder_refuses_is_skipped_alone(caplog) -> None:
    provider, exported = _provider(Resource.create({"service.name": "t"}))
    with provider.get_tracer("t").start_as_current_span("s") as span:
        span.set_attribute("kept", "yes")
        span.set_attribute("too big", 1 << 70)  # the SDK keeps it; int64 cannot carry it
    spans = exported.get_finished_spans()
    with caplog.at_level(logging.ERROR):
        ours = encode_request(spans)
    assert ours == encode_spans(spans).SerializeToString()
    decoded = ExportTraceServiceRequest.FromString(ours)
    (only,) = decoded.resource_spans[0].scope_spans[0].spans
    assert [kv.key for kv in only.attributes] == ["kept"]
    assert "too big" in caplog.text


def test_varint_matches_protobuf() -> None:
    for n in (0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**64 - 1):
        request = ExportTraceServiceRequest()
        request.resource_spans.add().resource.dropped_attributes_count = n if n < 2**32 else 0
        if n < 2**32:
            assert request.SerializeToString().endswith(varint(n))
    assert varint(2**64 - 1) == b"\xff" * 9 + b"\x01"
