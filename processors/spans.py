"""``active_span``: ``tracer.start_as_current_span`` as one small class, for spans on every turn.

Why: every turn is traced, and ``start_as_current_span`` wraps the span in generator-based context
managers, three deep when the tracer is the API's ``ProxyTracer`` (a module-level
``trace.get_tracer`` made before the SDK provider is installed, as ours are): each level is a
generator created, advanced and closed per span. This class does the same work with the public
API only (``start_span``, ``set_span_in_context``, ``context.attach``/``detach``, ``end``) and the
same rules: the span is current inside the block, an ``Exception`` escaping it is recorded and sets
the status to ERROR (a ``BaseException`` such as a cancellation does not), and the span ends on exit.

Attributes belong in ``attributes=`` when known at start: the SDK validates them in one pass, where
each ``set_attribute`` takes the span's lock and validates on its own.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode


class active_span:  # noqa: N801 - used like the function it replaces: ``with active_span(...) as span``
    __slots__ = ("span", "_token", "_record_exception", "_set_status_on_exception")

    def __init__(
        self,
        tracer: trace.Tracer,
        name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
        context: otel_context.Context | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> None:
        self.span: Span = tracer.start_span(
            name,
            context=context,
            kind=kind,
            attributes=attributes,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        )
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self.span
        try:
            otel_context.detach(self._token)
            if isinstance(exc, Exception) and span.is_recording():
                if self._record_exception:
                    span.record_exception(exc)
                if self._set_status_on_exception:
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            span.end()
