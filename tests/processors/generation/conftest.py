"""Fixtures for the generation tests: scripted LLM servers on loopback ports (the in-memory tracer
``spans`` is tests/processors/conftest.py's)."""

from __future__ import annotations

import pytest

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
def turn() -> ChatTurn:
    return make_turn(history=[HistoryTurn(role="user", text="Hi"), HistoryTurn(role="assistant", text="Hello!")])
