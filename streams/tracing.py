"""W3C trace context across Kafka hops, done by hand.

The contrib Kafka instrumentations either only *link* the consumer to the producer or inject a
second ``traceparent``; one user turn must be one trace. So each stage extracts the context from
the record headers, runs its work inside a CONSUMER span parented by it, and injects exactly once.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from processors.spans import active_span

TRACE_HEADERS = ("traceparent", "tracestate", "baggage")

_configured = False


def setup_tracing(settings, service_name: str | None = None) -> None:
    """Install the SDK tracer provider once per process; exporting is off without an endpoint."""
    global _configured
    if _configured:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name or settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    trace.set_tracer_provider(provider)
    _configured = True
    if settings.otlp_endpoint:
        ensure_otlp_export(settings.otlp_endpoint, settings.trace_exporter)


_exporting_to: set[str] = set()


def ensure_otlp_export(endpoint: str, exporter: str = "lean") -> None:
    """Export this process's spans to ``endpoint`` (once), even if tracing was set up without it.

    The global tracer provider can be installed only once per process; a process that hosts several
    components (the test suite, say) may have installed it first without an exporter. ``exporter``:
    ``lean`` (``streams.otlp_exporter``: the same OTLP/gRPC bytes for about a third of the CPU per
    span) or ``sdk`` (the SDK's ``OTLPSpanExporter``), settings field ``trace_exporter``.
    """
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    if endpoint in _exporting_to or not isinstance(provider, TracerProvider):
        return
    if exporter == "sdk":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    else:
        from streams.otlp_exporter import LeanOTLPSpanExporter

        span_exporter = LeanOTLPSpanExporter(endpoint, insecure=True)
    provider.add_span_processor(batch_span_processor(span_exporter))
    _exporting_to.add(endpoint)


def batch_span_processor(exporter):  # type: ignore[no-untyped-def]
    """The export queue every process uses (``chatstream dev tracing-cpu`` measures with it too).

    100 % of turns are traced (about 12 worker spans each): a queue of several seconds of spans at
    full load so a burst or a slow collector does not drop spans; one export request carries up to
    1024 spans, every 500 ms at most, so at ~100 turns/s a request carries ~600 spans and the
    per-request cost (one gRPC call) is spread thin.
    """
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(exporter, schedule_delay_millis=500, max_queue_size=16384, max_export_batch_size=1024)


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush(5000)  # type: ignore[attr-defined]


_tracers: dict[str, trace.Tracer] = {}


def tracer(name: str = "chatstream") -> trace.Tracer:
    """One tracer per name, kept: ``trace.get_tracer`` builds a new one per call (~8 us, on every span)."""
    found = _tracers.get(name)
    if found is None:
        found = _tracers[name] = trace.get_tracer(name)  # a proxy until the provider is installed
    return found


def extract(headers: Sequence[tuple[str, bytes | None]] | None) -> otel_context.Context:
    """The upstream context carried by a record's headers (an empty context if none)."""
    carrier: dict[str, str] = {}
    for key, value in headers or ():
        if key in TRACE_HEADERS and value is not None:
            carrier[key] = value.decode("latin-1")  # last one wins; we never write two
    return propagate.extract(carrier)


def inject(headers: Sequence[tuple[str, bytes | None]] | None = None) -> list[tuple[str, bytes | None]]:
    """Headers with the current context written exactly once (old trace headers replaced)."""
    out = [(k, v) for k, v in (headers or ()) if k not in TRACE_HEADERS]
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    out.extend((k, v.encode("latin-1")) for k, v in carrier.items())
    return out


def hash_user(user_id: str, include_content: bool = False) -> str:
    """User ids are personal data: traces get a stable hash unless the operator opts in."""
    if include_content:
        return user_id
    return hashlib.sha256(user_id.encode()).hexdigest()[:16]


def consumer_span(
    topic: str,
    headers: Sequence[tuple[str, bytes | None]] | None,
    attributes: dict[str, object],
) -> active_span:
    """``<topic> process`` as a child of the producer's context, current for the handler's work
    (``with consumer_span(...) as span``; the span starts here, as the ``with`` begins)."""
    return active_span(
        tracer("chatstream.streams"), f"{topic} process", context=extract(headers), kind=SpanKind.CONSUMER,
        attributes=attributes,
    )


def process_attributes(
    topic: str, partition: int, offset: int, handler: str, group: str | None = None
) -> dict[str, object]:
    """The attributes of every ``<topic> process`` span, stage or edge alike."""
    attributes: dict[str, object] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
        "chatstream.stage": handler,
    }
    if group:
        attributes["messaging.consumer.group.name"] = group
    return attributes


def record_failure(span: Span, exc: BaseException, description: str | None = None) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, description or f"{type(exc).__name__}: {exc}"))


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
