"""Tracing's CPU per turn: one turn's spans created, ended and exported, in one run.

Why: OpenTelemetry was the largest single CPU cost in the worker (py-spy --gil, issue 9). This
reproduces what tracing does for one bench turn in the worker (11 spans: the four ``<topic>
process`` CONSUMER spans, each with the upstream context extracted from headers and injected into
the outputs; under them redis x3 (session.admit, reply.claim, reply.finish), retrieval retrieve, embeddings embed, weaviate hybrid_search and the
``chat <model>`` span, with the attributes the code gives them) and exports them through the same
``BatchSpanProcessor`` settings to the configured OTLP endpoint (Jaeger). CPU is this process's
``time.process_time`` (all threads: the export thread encodes and sends), divided by the turns;
``loop`` is the calling thread alone (``time.thread_time``), the part the event loop pays.

Two choices, alternated round by round so machine noise hits them alike:
``spans``: ``sdk`` (``tracer.start_as_current_span`` through the API's proxy tracer, attributes set
one by one as the code did before) or ``lean`` (``processors.spans.active_span``, attributes at start);
``exporter``: ``sdk`` (the SDK's ``OTLPSpanExporter``) or ``lean`` (``streams.otlp_exporter``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from processors.spans import active_span
from streams import tracing

TOPICS = ("chat.inbound", "chat.enriched", "chat.retrieved", "chat.generated")
STAGES = ("enrich", "retrieve", "generate", "validate")


def _exporter(kind: str, endpoint: str) -> SpanExporter:
    if kind == "sdk":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=True)
    from streams.otlp_exporter import LeanOTLPSpanExporter

    return LeanOTLPSpanExporter(endpoint)


def _sdk_turn(tracer: trace.Tracer, i: int) -> None:
    """The turn as the code made it before: start_as_current_span, attributes set one by one."""
    headers = tracing.inject([])
    for n, (topic, stage) in enumerate(zip(TOPICS, STAGES)):
        parent = tracing.extract(headers)
        attributes = tracing.process_attributes(topic, i % 6, i, stage, "bench-group")
        with tracing.tracer("chatstream.streams").start_as_current_span(
            f"{topic} process", context=parent, kind=SpanKind.CONSUMER, attributes=attributes  # type: ignore[arg-type]
        ) as span:
            span.set_attribute("messaging.message.id", f"m-{i:08d}")
            if n == 0:
                for name in ("redis session.admit",):
                    with tracer.start_as_current_span(name, attributes={"db.system": "redis", "db.operation": "EVALSHA",
                                                                        "chatstream.session_id": f"bench:{i % 200}"}):
                        pass
            elif n == 1:
                with tracer.start_as_current_span("retrieval retrieve") as r:
                    r.set_attribute("chatstream.tenant", "default")
                    r.set_attribute("chatstream.retrieval.follow_up", False)
                    with tracer.start_as_current_span("embeddings embed") as e:
                        e.set_attribute("chatstream.embedding.provider", "local-minilm")
                        e.set_attribute("chatstream.embedding.texts", 1)
                    with tracer.start_as_current_span("weaviate hybrid_search") as w:
                        for k, v in (("db.system", "weaviate"), ("chatstream.tenant", "default"),
                                     ("chatstream.retrieval.k", 4), ("chatstream.retrieval.alpha", 0.75)):
                            w.set_attribute(k, v)
                        w.set_attribute("chatstream.retrieval.hits", 4)
                    for k, v in (("chatstream.retrieval.ok", True), ("chatstream.retrieval.hits", 4),
                                 ("chatstream.retrieval.top_doc", "kb-doc-12"), ("chatstream.retrieval.top_score", 0.91),
                                 ("chatstream.retrieval.relevance", 0.87), ("chatstream.retrieval.answerable", True)):
                        r.set_attribute(k, v)
                span.set_attribute("chatstream.retrieval.ok", True)
                span.set_attribute("chatstream.retrieval.passages", 4)
                span.set_attribute("chatstream.retrieval.answerable", True)
            elif n == 2:
                with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=_llm_attributes()) as c:
                    c.set_attribute("gen_ai.response.model", "gpt-4o-mini")
                    c.set_attribute("gen_ai.usage.input_tokens", 412)
                    c.set_attribute("gen_ai.usage.output_tokens", 61)
            else:
                for name in ("redis reply.claim", "redis reply.finish"):
                    with tracer.start_as_current_span(name, attributes={"db.system": "redis", "db.operation": "EVALSHA"}):
                        pass
            headers = tracing.inject(headers)


def _lean_turn(tracer: trace.Tracer, i: int) -> None:
    """The turn as the code makes it now: ``active_span``, attributes at start where known."""
    headers = tracing.inject([])
    for n, (topic, stage) in enumerate(zip(TOPICS, STAGES)):
        attributes = tracing.process_attributes(topic, i % 6, i, stage, "bench-group")
        with tracing.consumer_span(topic, headers, attributes) as span:
            span.set_attribute("messaging.message.id", f"m-{i:08d}")
            if n == 0:
                for name in ("redis session.admit",):
                    with active_span(tracer, name, attributes={"db.system": "redis", "db.operation": "EVALSHA",
                                                               "chatstream.session_id": f"bench:{i % 200}"}):
                        pass
            elif n == 1:
                with active_span(tracer, "retrieval retrieve", attributes={
                        "chatstream.tenant": "default", "chatstream.retrieval.follow_up": False}) as r:
                    with active_span(tracer, "embeddings embed", attributes={
                            "chatstream.embedding.provider": "local-minilm", "chatstream.embedding.texts": 1}):
                        pass
                    with active_span(tracer, "weaviate hybrid_search", attributes={
                            "db.system": "weaviate", "chatstream.tenant": "default", "chatstream.retrieval.k": 4,
                            "chatstream.retrieval.alpha": 0.75}) as w:
                        w.set_attribute("chatstream.retrieval.hits", 4)
                    r.set_attributes({"chatstream.retrieval.ok": True, "chatstream.retrieval.hits": 4,
                                      "chatstream.retrieval.top_doc": "kb-doc-12", "chatstream.retrieval.top_score": 0.91,
                                      "chatstream.retrieval.relevance": 0.87, "chatstream.retrieval.answerable": True})
                span.set_attributes({"chatstream.retrieval.ok": True, "chatstream.retrieval.passages": 4,
                                     "chatstream.retrieval.answerable": True})
            elif n == 2:
                with active_span(tracer, "chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=_llm_attributes()) as c:
                    c.set_attributes({"gen_ai.response.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 412,
                                      "gen_ai.usage.output_tokens": 61})
            else:
                for name in ("redis reply.claim", "redis reply.finish"):
                    with active_span(tracer, name, attributes={"db.system": "redis", "db.operation": "EVALSHA"}):
                        pass
            headers = tracing.inject(headers)


def _llm_attributes() -> dict[str, object]:
    return {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini", "gen_ai.request.max_tokens": 400,
            "chatstream.llm.provider": "openai", "chatstream.llm.attempt": 1, "gen_ai.request.stream": True}


SPANS_PER_TURN = 11


class _Switch(SpanProcessor):
    """Hands spans to the processor of the combination being measured (the same extra call for all)."""

    def __init__(self) -> None:
        self.target: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context=None) -> None:  # type: ignore[no-untyped-def]
        assert self.target is not None
        self.target.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        assert self.target is not None
        self.target.on_end(span)


def main(endpoint: str, turns: int, rounds: int) -> int:
    provider = TracerProvider(resource=Resource.create({"service.name": "chatstream-tracing-cpu"}),
                              sampler=ParentBased(TraceIdRatioBased(1.0)))
    trace.set_tracer_provider(provider)
    # the processors' module-level tracers are ProxyTracers made before any provider: the same here
    proxy = trace.get_tracer("chatstream.tracing-cpu")
    exporters = {kind: _exporter(kind, endpoint) for kind in ("sdk", "lean")}
    processors = {kind: tracing.batch_span_processor(exporter) for kind, exporter in exporters.items()}
    switch = _Switch()
    provider.add_span_processor(switch)
    turn_styles: dict[str, Callable[[trace.Tracer, int], None]] = {"sdk": _sdk_turn, "lean": _lean_turn}
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    combos = [(s, e) for s in ("sdk", "lean") for e in ("sdk", "lean")]
    for _ in range(rounds):
        for spans, exporter in combos:
            switch.target = processors[exporter]
            cpu, loop = time.process_time(), time.thread_time()
            for i in range(turns):
                turn_styles[spans](proxy, i)
            loop = time.thread_time() - loop
            processors[exporter].force_flush(30_000)
            cpu = time.process_time() - cpu
            results.setdefault((spans, exporter), []).append((cpu * 1e6 / turns, loop * 1e6 / turns))
    for processor in processors.values():
        processor.shutdown()
    print(f"tracing CPU per turn ({SPANS_PER_TURN} spans, {turns} turns x {rounds} rounds, median of rounds; "
          f"export to {endpoint})")
    print(f"{'spans':6} {'exporter':9} {'us/turn':>8} {'loop us/turn':>13} {'us/span':>8}")
    base = None
    for (spans, exporter), rows in results.items():
        cpu = sorted(r[0] for r in rows)[len(rows) // 2]
        loop = sorted(r[1] for r in rows)[len(rows) // 2]
        base = base or cpu
        print(f"{spans:6} {exporter:9} {cpu:8.0f} {loop:13.0f} {cpu / SPANS_PER_TURN:8.1f}   x{cpu / base:.2f}")
    return 0
