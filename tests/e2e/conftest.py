"""A real pipeline per test module: its own topic namespace and consumer group, a `chatstream
worker` child process, the scripted OpenAI-compatible LLM, and the sample knowledge base."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from stack.ports import free_port
from streams.client import ChatClient
from streams.config import Settings
from streams.dev.llm_server import ScriptedLLMServer
from streams.dev.worker_process import WorkerProcess, settings_env
from streams.topics import create_topics

KB = Path(__file__).resolve().parents[2] / "streams" / "demo" / "knowledge_base"

pytestmark = pytest.mark.stack


@pytest.fixture(scope="session")
def knowledge_base() -> str:
    """The sample help center ingested once (idempotent: re-ingest changes nothing)."""
    settings = Settings()
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "ingest", str(KB), "--tenant", settings.tenant],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return settings.tenant


@pytest.fixture(scope="module")
def llm():
    with ScriptedLLMServer() as server:
        yield server


def pipeline_settings(llm: ScriptedLLMServer, **overrides) -> Settings:
    run = uuid.uuid4().hex[:8]
    values = dict(
        topic_prefix=f"e2e-{run}.",
        consumer_group=f"e2e-{run}",
        llm_base_url=llm.base_url,
        llm_api_key="test-key",
        llm_timeout_s=5.0,
        rate_limit_burst=12,
        rate_limit_per_minute=6,
        max_in_flight=64,
    )
    values.update(overrides)
    settings = Settings(**values)
    create_topics(settings)
    return settings


@pytest.fixture(scope="module")
def settings(llm, knowledge_base) -> Settings:
    return pipeline_settings(llm)




@pytest.fixture(scope="session", autouse=True)
def test_tracing():
    """The test process plays the channel: it starts each turn's trace, as a connector does."""
    from streams import tracing

    settings = Settings()
    tracing.setup_tracing(settings, "chatstream-tests")
    assert settings.otlp_endpoint, "the e2e tests read traces back from the stack's Jaeger"
    tracing.ensure_otlp_export(settings.otlp_endpoint)  # another suite may have set tracing up first
    yield
    tracing.shutdown_tracing()


@pytest.fixture(scope="module")
def worker(settings: Settings):
    port = free_port()
    process = WorkerProcess(settings, CHATSTREAM_METRICS_PORT=str(port)).start()
    process.metrics_url = f"http://127.0.0.1:{port}/metrics"
    try:
        process.wait_started(90)
        yield process
    finally:
        process.terminate(60)
        print(process.tail(30))


@pytest_asyncio.fixture(loop_scope="function")
async def client(settings: Settings, worker: WorkerProcess):
    async with ChatClient(settings) as c:
        yield c
