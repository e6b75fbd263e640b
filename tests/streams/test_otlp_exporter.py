"""The lean exporter delivers what the SDK's exporter would, retries what gRPC calls transient,
drops a batch on anything else, and stops retrying at shutdown."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streams.otlp_exporter import EXPORT_METHOD, LeanOTLPSpanExporter, grpc_target


class Collector:
    """A gRPC server with the OTLP trace Export method; ``failures`` answers come first."""

    def __init__(self, failures: list[grpc.StatusCode] | None = None) -> None:
        self.failures = list(failures or [])
        self.requests: list[ExportTraceServiceRequest] = []
        self.calls = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler(
            EXPORT_METHOD.split("/")[1],
            {"Export": grpc.unary_unary_rpc_method_handler(self._export, request_deserializer=None, response_serializer=None)},
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls += 1
        if self.failures:
            context.abort(self.failures.pop(0), "scripted failure")
        self.requests.append(ExportTraceServiceRequest.FromString(request))
        return b""

    def stop(self) -> None:
        self.server.stop(None)


@pytest.fixture
def spans():
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("chat.inbound process", attributes={"messaging.system": "kafka"}):
        with tracer.start_as_current_span("redis session.load"):
            pass
    return memory.get_finished_spans()


def test_endpoints_as_the_settings_spell_them() -> None:
    assert grpc_target("http://127.0.0.1:4317") == ("127.0.0.1:4317", False)
    assert grpc_target("https://collector:4317") == ("collector:4317", True)
    assert grpc_target("localhost:4317") == ("localhost:4317", False)


def test_spans_arrive_as_otlp(spans) -> None:
    collector = Collector()
    try:
        exporter = LeanOTLPSpanExporter(f"http://127.0.0.1:{collector.port}")
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
        (request,) = collector.requests
        names = [s.name for s in request.resource_spans[0].scope_spans[0].spans]
        assert names == ["redis session.load", "chat.inbound process"]
        attributes = {kv.key: kv.value.string_value for kv in request.resource_spans[0].resource.attributes}
        assert attributes["service.name"] == "t"
    finally:
        collector.stop()


def test_transient_failures_are_retried_then_delivered(spans) -> None:
    collector = Collector([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
    try:
        exporter = LeanOTLPSpanExporter(f"http://127.0.0.1:{collector.port}", backoff_base_s=0.01, backoff_max_s=0.05)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert collector.calls == 3 and len(collector.requests) == 1
    finally:
        collector.stop()


def test_a_refused_batch_is_dropped_without_retrying(spans, caplog) -> None:
    collector = Collector([grpc.StatusCode.INVALID_ARGUMENT])
    try:
        exporter = LeanOTLPSpanExporter(f"http://127.0.0.1:{collector.port}", backoff_base_s=0.01)
        assert exporter.export(spans) is SpanExportResult.FAILURE
        assert collector.calls == 1 and "2 spans dropped" in caplog.text
        assert exporter.export(spans) is SpanExportResult.SUCCESS  # the next batch goes through
    finally:
        collector.stop()


def stopped_collector_endpoint() -> str:
    """The address of a collector that was just stopped: nothing answers there."""
    collector = Collector()
    collector.stop()
    return f"http://127.0.0.1:{collector.port}"


def test_a_collector_that_stays_down_costs_one_deadline(spans) -> None:
    exporter = LeanOTLPSpanExporter(stopped_collector_endpoint(), timeout_s=0.5, backoff_base_s=0.05, backoff_max_s=0.1)
    started = time.monotonic()
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 2.0


def test_shutdown_stops_a_retry_in_progress(spans) -> None:
    exporter = LeanOTLPSpanExporter(stopped_collector_endpoint(), timeout_s=30, backoff_base_s=5, backoff_max_s=5)
    retrying = threading.Event()
    before_retry = exporter._before_retry

    def noted(state) -> None:  # type: ignore[no-untyped-def]
        before_retry(state)
        retrying.set()

    exporter._before_retry = noted  # type: ignore[method-assign]
    result: list[SpanExportResult] = []
    thread = threading.Thread(target=lambda: result.append(exporter.export(spans)))
    thread.start()
    assert retrying.wait(10)  # the first attempt has failed; the retry waits its 5 s backoff
    exporter.shutdown()
    thread.join(5)
    assert not thread.is_alive() and result == [SpanExportResult.FAILURE]
    assert exporter.export(spans) is SpanExportResult.FAILURE
