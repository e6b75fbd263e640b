"""Fixtures for the generation tests: scripted LLM servers on loopback ports, an in-memory tracer."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from genhelpers import make_turn

from processors.records import ChatTurn, HistoryTurn
from streams.dev.llm_server import ScriptedLLMServer


@pytest.fixture
def llm():
    with ScriptedLLMServer() as server:
        yield server


@pytest.fixture
def llm2():
    with ScriptedLLMServer(model="secondary-llm") as server:
        yield server


@pytest.fixture
def spans():
    """A tracer whose finished spans can be inspected, without touching the global provider."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("chatstream.generation"), exporter
    provider.shutdown()


@pytest.fixture
def turn() -> ChatTurn:
    return make_turn(history=[HistoryTurn(role="user", text="Hi"), HistoryTurn(role="assistant", text="Hello!")])
