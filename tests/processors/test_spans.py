"""``active_span`` behaves as ``start_as_current_span``: current inside, parented, errors recorded."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from processors.spans import active_span


def test_current_inside_parented_ended_with_attributes(spans) -> None:
    tracer, exporter = spans
    with active_span(tracer, "outer", kind=SpanKind.CONSUMER, attributes={"a": 1}) as outer:
        assert trace.get_current_span() is outer
        with active_span(tracer, "inner") as inner:
            assert trace.get_current_span() is inner
        assert trace.get_current_span() is outer
    assert trace.get_current_span() is not outer
    inner_done, outer_done = exporter.get_finished_spans()
    assert inner_done.parent.span_id == outer_done.context.span_id
    assert outer_done.kind is SpanKind.CONSUMER and outer_done.attributes["a"] == 1
    assert outer_done.end_time is not None and inner_done.status.status_code is StatusCode.UNSET


def test_explicit_parent_context(spans) -> None:
    tracer, exporter = spans
    with active_span(tracer, "upstream") as upstream:
        context = trace.set_span_in_context(upstream)
    with active_span(tracer, "child", context=context):
        pass
    upstream_done, child_done = exporter.get_finished_spans()
    assert child_done.parent.span_id == upstream_done.context.span_id


def test_an_exception_is_recorded_and_sets_the_status_as_start_as_current_span_does(spans) -> None:
    tracer, exporter = spans
    for start in (lambda: active_span(tracer, "x"), lambda: tracer.start_as_current_span("x")):
        with pytest.raises(ValueError):
            with start():
                raise ValueError("boom")
    ours, sdk = exporter.get_finished_spans()
    for span in (ours, sdk):
        assert span.status.status_code is StatusCode.ERROR and span.status.description == "ValueError: boom"
        assert [e.name for e in span.events] == ["exception"]
        assert span.events[0].attributes["exception.type"] == "ValueError"


def test_opting_out_of_recording_and_cancellation_is_not_an_error(spans) -> None:
    tracer, exporter = spans
    with pytest.raises(ValueError):
        with active_span(tracer, "quiet", record_exception=False, set_status_on_exception=False):
            raise ValueError("handled by the caller")
    with pytest.raises(asyncio.CancelledError):
        with active_span(tracer, "cancelled"):
            raise asyncio.CancelledError()
    for span in exporter.get_finished_spans():
        assert span.status.status_code is StatusCode.UNSET and not span.events, span.name
        assert span.end_time is not None
