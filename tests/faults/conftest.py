"""A private stack for fault tests: its own Kafka, Redis and Weaviate on other ports.

These tests stop and restart servers, so they never touch the shared local stack (9092/6379/8080)
other engineers are using. The private stack lives in ``.chatstream/faults`` (kept between runs, so
Kafka is formatted and the knowledge base ingested once), comes up once per session and goes down at
the end. Each test gets its own topic namespace, consumer group, worker process(es) and scripted LLM.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import SecretStr

from stack.manager import Stack
from streams.client import ChatClient
from streams.config import Settings
from streams.dev import llm_server
from streams.dev.llm_server import ScriptedLLMServer
from streams.dev.worker_process import WorkerProcess, settings_env
from streams.topics import check_topics, create_topics
from tests.faults.llm_log import RequestLog

ROOT = Path(__file__).resolve().parents[2]
KB = ROOT / "streams" / "demo" / "knowledge_base"
HOME = ROOT / ".chatstream" / "faults"

pytestmark = pytest.mark.stack


def private_settings(**overrides: object) -> Settings:
    """Every port of the private stack differs from the shared one's; traces go nowhere."""
    values: dict[str, object] = dict(
        home=HOME,
        kafka_port=19092,
        kafka_controller_port=19093,
        kafka_bootstrap="127.0.0.1:19092",
        redis_port=16379,
        redis_url="redis://127.0.0.1:16379/0",
        weaviate_host="127.0.0.1",
        weaviate_http_port=18080,
        weaviate_grpc_port=50061,
        weaviate_gossip_port=17946,
        weaviate_data_port=17947,
        weaviate_raft_port=18300,
        weaviate_raft_rpc_port=18301,
        jaeger_otlp_grpc_port=14317,
        jaeger_otlp_http_port=14318,
        jaeger_query_port=26686,
        jaeger_query_grpc_port=26685,
        otlp_endpoint="",
        stack_stop_timeout_s=20.0,
    )
    values.update(overrides)
    return Settings(**values)


class FaultStack:
    """The private stack plus helpers to take one service away and bring it back."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack = Stack(settings, out=lambda line: print(f"[stack] {line}"))

    def up(self, *names: str) -> float:
        began = time.monotonic()
        self.stack.up(list(names) or ["kafka", "redis", "weaviate"])
        return time.monotonic() - began

    def down(self, *names: str) -> None:
        self.stack.down(list(names))

    def is_running(self, name: str) -> bool:
        return self.stack.select([name])[0].is_running()

    @contextlib.contextmanager
    def outage(self, name: str) -> Iterator[None]:
        """Stop ``name``; whatever happens inside, it is running again afterwards."""
        self.down(name)
        try:
            yield
        finally:
            if not self.is_running(name):
                self.up(name)


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[FaultStack]:
    stack = FaultStack(private_settings())
    stack.up()
    try:
        env = settings_env(stack.settings, CHATSTREAM_HOME=str(HOME), CHATSTREAM_WEAVIATE_HOST="127.0.0.1")
        result = subprocess.run(
            [sys.executable, "-m", "streams.cli", "ingest", str(KB), "--tenant", stack.settings.tenant],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        yield stack
    finally:
        if os.environ.get("CHATSTREAM_FAULTS_KEEP_STACK") != "1":
            stack.down()


@pytest.fixture(scope="session")
def stack_ready(fault_stack: FaultStack) -> Settings:
    """These tests need the private stack only, not the shared one the root conftest checks."""
    return fault_stack.settings


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedLLMServer]:
    """The scripted LLM, with ``llm.log``: which turn (message id) each chat call was for, and when."""
    log = RequestLog()
    plain = llm_server.create_app
    monkeypatch.setattr(llm_server, "create_app", lambda state: log.wrap(plain(state)))
    with ScriptedLLMServer() as server:
        server.log = log  # type: ignore[attr-defined]
        yield server


def pipeline_settings(stack: FaultStack, llm: ScriptedLLMServer, **overrides: object) -> Settings:
    """A fresh namespace (topics, consumer group) on the private stack, topics created."""
    run = uuid.uuid4().hex[:8]
    values: dict[str, object] = dict(
        topic_prefix=f"faults-{run}.",
        consumer_group=f"faults-{run}",
        llm_base_url=llm.base_url,
        llm_api_key=SecretStr("test-key"),
        llm_timeout_s=5.0,
        rate_limit_per_minute=1e6,
        rate_limit_burst=1_000_000,
        max_in_flight=64,
        kafka_session_timeout_s=8.0,
        # the whole conversation stays in the history, so the audit sees every turn appended once
        history_turns=64,
    )
    values.update(overrides)
    settings = stack.settings.derive(**values)
    create_topics(settings)
    # a broker that just (re)started may acknowledge the creation before its metadata lists the
    # topics; the worker checks them at start, so wait until they are visible
    deadline = time.monotonic() + 30
    while problems := check_topics(settings):
        assert time.monotonic() < deadline, f"topics not visible 30 s after creation: {problems}"
        time.sleep(0.2)
    return settings


class Workers:
    """Worker processes of one test; all are stopped (or killed) at teardown."""

    def __init__(self) -> None:
        self.started: list[WorkerProcess] = []

    def start(self, settings: Settings, wait: bool = True, **env: str) -> WorkerProcess:
        extra = {
            "CHATSTREAM_HOME": str(HOME),
            "CHATSTREAM_WEAVIATE_HOST": settings.weaviate_host,
            "CHATSTREAM_KAFKA_SESSION_TIMEOUT_S": str(settings.kafka_session_timeout_s),
            "CHATSTREAM_LLM_DEADLINE_S": str(settings.llm_deadline_s),
            "CHATSTREAM_LLM_BACKOFF_BASE_S": str(settings.llm_backoff_base_s),
            "CHATSTREAM_LLM_RETRY_AFTER_MAX_S": str(settings.llm_retry_after_max_s),
            "CHATSTREAM_OTLP_ENDPOINT": "",
            "CHATSTREAM_HISTORY_TURNS": str(settings.history_turns),  # not among settings_env's fields
            **env,
        }
        worker = WorkerProcess(settings, **extra).start()
        self.started.append(worker)
        if wait:
            worker.wait_started(120)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            if worker.alive():
                worker.terminate(30)
        for worker in self.started:
            print(f"--- worker {worker.pid} log tail ---\n{worker.tail(25)}")


@pytest.fixture
def workers() -> Iterator[Workers]:
    group = Workers()
    try:
        yield group
    finally:
        group.stop_all()


@pytest_asyncio.fixture(loop_scope="function")
async def client_for():
    """``await client_for(settings)``: a started ChatClient on that namespace, closed at teardown."""
    clients: list[ChatClient] = []

    async def make(settings: Settings) -> ChatClient:
        client = ChatClient(settings)
        await client.start()
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.close()
