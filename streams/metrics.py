"""The numbers a support bot lives by, as OpenTelemetry instruments.

Instruments are created against the global meter provider, so they are no-ops until
``setup_metrics`` installs one (worker: Prometheus scrape endpoint + OTLP); tests install an
in-memory reader and read the same instruments back.
"""

from __future__ import annotations

from opentelemetry import metrics

_meter = metrics.get_meter("chatstream")

STAGE_LATENCY = _meter.create_histogram(
    "chatstream.stage.duration", unit="s", description="Processing time of one record per stage"
)
E2E_LATENCY = _meter.create_histogram(
    "chatstream.turn.duration", unit="ms", description="From a turn's sent_at to its reply being produced"
)
RECORDS = _meter.create_counter("chatstream.stage.records", description="Records handled per stage and outcome")
DEAD_LETTERS = _meter.create_counter("chatstream.deadletters", description="Records dead-lettered, by stage")
RETRIES = _meter.create_counter("chatstream.transient_retries", description="Transient failures retried")
TOKENS = _meter.create_counter("chatstream.llm.tokens", description="LLM tokens by model and direction")
LLM_CALLS = _meter.create_counter("chatstream.llm.calls", description="LLM calls by provider and outcome")
RETRIEVAL_TOP_SCORE = _meter.create_histogram(
    "chatstream.retrieval.top_score", description="Best absolute relevance per turn (cosine of query and chunk embeddings, comparable across queries)"
)
REPLIES = _meter.create_counter("chatstream.replies", description="Replies by status (escalation rate = ESCALATED/all)")
VALIDATION_FAILURES = _meter.create_counter("chatstream.validation.failures", description="Validation rules failed")
REPLY_CLAIMS_LOST = _meter.create_counter(
    "chatstream.reply.claims_lost", description="Replies produced after their Redis claim passed to another worker"
)
FEEDBACK = _meter.create_counter("chatstream.feedback", description="User feedback by kind")
CSAT = _meter.create_histogram("chatstream.feedback.csat", description="CSAT scores (1-5) given by users")
TTFT = _meter.create_histogram(
    "chatstream.llm.time_to_first_token",
    unit="ms",
    description="From the generate stage taking a turn to its first provisional text being shown",
)
DELTAS = _meter.create_counter("chatstream.deltas", description="Provisional answer pieces by outcome")


def stage_processed(stage: str, seconds: float, outcome: str) -> None:
    STAGE_LATENCY.record(seconds, {"stage": stage})
    RECORDS.add(1, {"stage": stage, "outcome": outcome})


def dead_lettered(stage: str, error_class: str) -> None:
    DEAD_LETTERS.add(1, {"stage": stage, "error": error_class})


def transient_retry(stage: str, step: str) -> None:
    RETRIES.add(1, {"stage": stage, "step": step})


def reply_produced(status: str, latency_ms: int, model: str, prompt_tokens: int, completion_tokens: int) -> None:
    REPLIES.add(1, {"status": status})
    E2E_LATENCY.record(latency_ms, {"status": status})
    if model:
        TOKENS.add(prompt_tokens, {"model": model, "direction": "input"})
        TOKENS.add(completion_tokens, {"model": model, "direction": "output"})


def reply_claim_lost(stage: str) -> None:
    REPLY_CLAIMS_LOST.add(1, {"stage": stage})


def llm_call(provider: str, outcome: str) -> None:
    LLM_CALLS.add(1, {"provider": provider, "outcome": outcome})


def time_to_first_token(ms: float, provider: str) -> None:
    TTFT.record(ms, {"provider": provider})


def deltas_published(count: int, outcome: str) -> None:
    DELTAS.add(count, {"outcome": outcome})


def retrieval_score(score: float) -> None:
    RETRIEVAL_TOP_SCORE.record(score)


def validation_failed(rule: str) -> None:
    VALIDATION_FAILURES.add(1, {"rule": rule})


def feedback_received(kind: str, channel: str, score: int) -> None:
    """One ChatFeedback published to chat.feedback (counted by the gateway that publishes it)."""
    FEEDBACK.add(1, {"kind": kind, "channel": channel})
    if kind == "CSAT":
        CSAT.record(score, {"channel": channel})


_configured = False


def setup_metrics(settings, prometheus_port: int | None = None) -> None:
    """Install the SDK meter provider once: Prometheus scrape endpoint and OTLP when configured."""
    global _configured
    if _configured:
        return
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    readers = []
    if prometheus_port:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        start_http_server(prometheus_port, addr=settings.bind_host)
        readers.append(PrometheusMetricReader())
    if settings.otlp_metrics_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=settings.otlp_metrics_endpoint, insecure=True), export_interval_millis=10000
            )
        )
    metrics.set_meter_provider(
        MeterProvider(metric_readers=readers, resource=Resource.create({"service.name": settings.service_name}))
    )
    _configured = True


def register_lag_gauge(settings, probe=None) -> None:
    """Consumer lag by topic, computed when a reader collects (scrape or export), not on a timer.

    One ``LagProbe`` (an admin client and a watermark consumer) lives as long as the gauge: a scrape
    reuses its connections instead of opening new ones.
    """
    from opentelemetry.metrics import CallbackOptions, Observation

    from streams.lag import LagProbe

    probes: list = [probe] if probe is not None else []  # a LagProbe, made on the first collection

    def observe(options: CallbackOptions):
        try:
            if not probes:
                probes.append(LagProbe(settings))
            lag = probes[0].stage_lag(timeout_s=2.0)
        except Exception:
            return []
        return [Observation(value, {"topic": topic}) for topic, value in lag.items()]

    _meter.create_observable_gauge("chatstream.consumer.lag", callbacks=[observe], description="Records not yet processed")


def register_inflight_gauge(windows: dict) -> None:
    """Turns running and waiting for their ack, per stage: shows which stage is the bottleneck."""
    from opentelemetry.metrics import CallbackOptions, Observation

    def observe(options: CallbackOptions):
        out = []
        for stage, window in list(windows.items()):
            out.append(Observation(window.running_count, {"stage": stage, "state": "running"}))
            out.append(Observation(window.in_flight, {"stage": stage, "state": "admitted"}))
        return out

    _meter.create_observable_gauge("chatstream.inflight", callbacks=[observe], description="Turns in a stage's window")


_breakers: dict[str, object] = {}


def register_circuit_gauge(breakers: dict[str, object]) -> None:
    """Circuit state per LLM provider (0 closed, 1 half-open, 2 open), read at collection time."""
    from opentelemetry.metrics import CallbackOptions, Observation

    first = not _breakers
    _breakers.update(breakers)
    if not first:
        return
    levels = {"closed": 0, "half_open": 1, "open": 2}

    def observe(options: CallbackOptions):
        out = []
        for provider, breaker in list(_breakers.items()):
            state = str(getattr(breaker.state, "value", breaker.state)).lower()
            out.append(Observation(levels.get(state, 2), {"provider": provider}))
        return out

    _meter.create_observable_gauge(
        "chatstream.llm.circuit_state", callbacks=[observe], description="Circuit per LLM provider: 0 closed, 1 half-open, 2 open"
    )
