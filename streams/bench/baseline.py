"""The same turns through the same processors in one asyncio process, without Kafka: the floor.

Why: "the pipeline costs X ms of CPU per turn" means little without what the work itself costs. The
baseline builds the processors exactly as the stages do (``SessionStore`` on the worker's Redis
client, the retriever with its embedder and Weaviate store, the generator, the validator) and runs
each turn through enrich -> retrieve -> generate -> validate with the same Redis calls (admission:
duplicate check, rate token and session load in one call; reply marker, reply record), the same
in-flight bound per stage and the same order per session, but no Kafka, no Avro and no stage runtime.
What remains between ``chatstream bench`` and ``chatstream bench --baseline`` is what Kafka and the
runtime cost.

Tracing is on as in the worker: the processors' own spans (Redis, embedding, Weaviate, LLM) and one
span per stage under a root span per turn, exported to the same endpoint.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from processors.records import ChatRequest, ChatResponse, Status, now_ms


class _Lane:
    """One stage's admission: at most ``limit`` turns inside, one turn of a session at a time, in order."""

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._tail: dict[str, asyncio.Future[None]] = {}

    @asynccontextmanager
    async def slot(self, session_id: str) -> AsyncIterator[None]:
        previous = self._tail.get(session_id)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tail[session_id] = mine  # registered before any await: a session's turns queue in order
        try:
            if previous is not None:
                await previous
            async with self._slots:
                yield
        finally:
            mine.set_result(None)
            if self._tail.get(session_id) is mine:
                del self._tail[session_id]


@dataclass
class BaselineResult:
    turns: int
    replies: list[ChatResponse]
    elapsed_s: float
    out_of_order_sessions: int
    statuses: dict[str, int] = field(default_factory=dict)
    cpu: Any = None  # streams.bench.cpu.CpuWindow of the run, when a meter was given

    @property
    def throughput(self) -> float:
        return len(self.replies) / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def latencies_ms(self) -> list[float]:
        return [float(r.latency_ms) for r in self.replies]

    @property
    def overhead_ms(self) -> list[float]:
        return [float(r.latency_ms - r.stage_ms.get("llm", 0)) for r in self.replies]


class BaselinePipeline:
    """The four stages' processors wired by direct calls; ``start`` opens the clients as the stages do."""

    def __init__(self, settings) -> None:  # type: ignore[no-untyped-def]
        self.settings = settings

    async def start(self) -> None:
        from processors.generation.generator import build_generator
        from processors.validation import Validator
        from streams.stages import clients
        from streams.stages.retrieve import open_retrieval

        self.sessions = clients.session_store(self.settings)
        self.retrieval = await open_retrieval(self.settings)  # exactly as RetrieveStage.start
        self.retriever = self.retrieval.retriever
        self.generator = build_generator(self.settings)
        self.validator = Validator.from_settings(self.settings)
        limit = self.settings.max_in_flight
        self.lanes = {name: _Lane(limit) for name in ("enrich", "retrieve", "generate", "validate")}
        self.completed: list[ChatResponse] = []  # replies in the order they were made

    async def close(self) -> None:
        from streams.stages import clients

        await self.generator.aclose()
        await self.retrieval.close()
        await clients.close_all()

    async def turn(self, request: ChatRequest) -> ChatResponse | None:
        """One turn start to end; None for a repeat (a message_id already replied to)."""
        from streams.tracing import tracer

        spans = tracer("chatstream.baseline")
        sid = request.session_id
        with spans.start_as_current_span("baseline turn"):
            async with self.lanes["enrich"].slot(sid):
                with spans.start_as_current_span("baseline enrich"):
                    started = time.perf_counter()
                    admission = await self.sessions.admit(request)
                    if admission.outcome == "replied":
                        return None
                    if admission.outcome == "rate_limited":
                        response = ChatResponse.for_request(request, "rate limited", Status.RATE_LIMITED)
                        await self.sessions.mark_replied([response.message_id])
                        self.completed.append(response)
                        return response
                    turn = admission.turn
                    assert turn is not None
                    turn.stage_ms["enrich"] = int((time.perf_counter() - started) * 1000)
            async with self.lanes["retrieve"].slot(sid):
                with spans.start_as_current_span("baseline retrieve"):
                    started = time.perf_counter()
                    turn = await self.retriever.retrieve(turn)
                    turn.stage_ms["retrieve"] = int((time.perf_counter() - started) * 1000)
            async with self.lanes["generate"].slot(sid):
                with spans.start_as_current_span("baseline generate"):
                    started = time.perf_counter()
                    turn = await self.generator.generate(turn)
                    turn.stage_ms["generate"] = int((time.perf_counter() - started) * 1000)
            async with self.lanes["validate"].slot(sid):
                with spans.start_as_current_span("baseline validate"):
                    started = time.perf_counter()
                    if await self.sessions.is_replied(request.message_id):
                        return None
                    response = self.validator.validate(turn).response
                    response.stage_ms = dict(turn.stage_ms)
                    response.stage_ms["llm"] = int(turn.llm_latency_ms)
                    response.stage_ms["validate"] = int((time.perf_counter() - started) * 1000)
                    await self.sessions.mark_replied([response.message_id])
                    await self.sessions.record_reply(request, response)
                    self.completed.append(response)
        return response


async def run_baseline(
    settings, requests: list[ChatRequest], rate: float, timeout_s: float, meter=None  # type: ignore[no-untyped-def]
) -> BaselineResult:
    """Offer ``requests`` at ``rate`` per second (0 = all at once) and wait for every reply.

    ``meter`` (a ``streams.bench.cpu.CpuMeter``) is started when the first turn is offered and
    stopped when the last reply is in, the same window as the pipeline's run.
    """
    pipeline = BaselinePipeline(settings)
    await pipeline.start()
    try:
        if meter is not None:
            meter.start()
        started = time.monotonic()
        interval = 1.0 / rate if rate > 0 else 0.0
        tasks = []
        for i, request in enumerate(requests):
            if interval:
                delay = started + i * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            request.sent_at = now_ms()
            tasks.append(asyncio.create_task(pipeline.turn(request)))
            if len(tasks) % 500 == 0:
                await asyncio.sleep(0)
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout_s)
        elapsed = time.monotonic() - started
        window = meter.stop() if meter is not None else None
    finally:
        await pipeline.close()
    replies = [r for r in results if r is not None]
    offered = {r.message_id: i for i, r in enumerate(requests)}
    by_session: dict[str, list[int]] = {}
    for reply in pipeline.completed:
        by_session.setdefault(reply.session_id, []).append(offered[reply.message_id])
    out_of_order = sum(order != sorted(order) for order in by_session.values())
    from streams.bench.figures import count_statuses

    statuses = count_statuses(replies)
    return BaselineResult(len(requests), replies, elapsed, out_of_order, statuses, window)
