"""``chatstream worker``: the stages of ``streams.pipeline`` on one consumer runtime.

One consumer per worker process, in the group ``settings.consumer_group`` (the same group as the
earlier Faust-based worker, so a deployment's committed offsets carry over), subscribed to the
sources of the stages it runs; one lane (backlog + in-flight window) per stage; one producer
(acks=all, idempotent) for all outputs. Per record the ``StageRunner`` decodes, processes, dead-letters, retries transient trouble
and produces before the record counts as done; the lane releases it in offset order and the runtime
commits. SIGTERM/SIGINT: stop pulling new turns, finish the turns in flight through the later stages
this worker runs (stage by stage, up to ``shutdown_grace_s``), commit, close.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from streams import metrics, tracing
from streams.codec import make_codec
from streams.config import Settings
from streams.message import InboundMessage
from streams.pipeline import build_stages
from streams.runtime.clients import PIPELINE_MAX_REQUEST, end_offsets_reader, make_consumer, make_producer
from streams.runtime.consumer import ConsumerRuntime
from streams.runtime.heap import freeze_startup_heap
from streams.runtime.lane import Lane, by_session
from streams.stage import Stage, StageRunner
from streams.stages import clients

log = logging.getLogger(__name__)


class StageWorker:
    """The stages of one worker process, their shared clients, and their consumer."""

    def __init__(self, settings: Settings, stages: list[Stage], consumer: Any = None, producer: Any = None) -> None:
        self.settings = settings
        self.stages = stages
        self.codec = make_codec(settings)
        self._consumer = consumer
        self.producer = producer
        self.runtime: ConsumerRuntime | None = None

    def lanes(self) -> list[Lane]:
        lanes = []
        for stage in self.stages:
            runner = StageRunner(stage, self.settings, self.codec, self.producer)

            async def handle(msg: Any, runner: StageRunner = runner) -> None:
                await runner.handle(InboundMessage.from_confluent(msg))

            lanes.append(Lane(stage.name, [stage.source], handle, max_in_flight=self.settings.max_in_flight,
                              max_backlog=self.settings.stream_buffer_maxsize, chain_key=by_session))
        return lanes

    def _connect_prefetch(self) -> None:
        """With enrich and retrieve in this process, a question's embedding starts when enrich admits
        the turn, not when the turn reaches retrieve a Redis trip and a Kafka hop later: it was the
        largest step before the LLM call (issue 14). Stages in separate processes simply do not overlap."""
        by_name = {stage.name: stage for stage in self.stages}
        enrich, retrieve = by_name.get("enrich"), by_name.get("retrieve")
        if enrich is not None and retrieve is not None and hasattr(retrieve, "prefetch"):
            enrich.on_admitted = retrieve.prefetch  # type: ignore[attr-defined]

    def on_assigned(self, newly: set[tuple[str, int]]) -> None:
        for stage in self.stages:
            stage.on_partitions_assigned(newly)

    async def start(self) -> ConsumerRuntime:
        """Open clients and start the stages (reply-marker recovery) before anything is consumed."""
        if self.producer is None:
            self.producer = make_producer(self.settings, **PIPELINE_MAX_REQUEST)
        for stage in self.stages:
            stage.attach_producer(self.producer, self.codec)  # generate also publishes chat.deltas
            await stage.start(self.codec)
        self._connect_prefetch()
        consumer = self._consumer or make_consumer(self.settings, self.settings.consumer_group)
        self.runtime = ConsumerRuntime(
            consumer, self.lanes(), grace_s=self.settings.shutdown_grace_s, on_assigned=self.on_assigned,
            staged_stop=True,  # build_stages gives the stages in pipeline order
            end_offsets=end_offsets_reader(self.settings) if self._consumer is None else None,
        )
        metrics.register_inflight_gauge({lane.name: lane.window for lane in self.runtime.lanes})
        log.info("stages started: %s", ", ".join(s.name for s in self.stages))
        return self.runtime

    async def close(self) -> None:
        for stage in self.stages:
            try:
                await stage.stop()
            except Exception:
                log.exception("stopping stage %s", stage.name)
        if self.producer is not None:
            await self.producer.close()
        await clients.close_all()


def install_stop_signals(stop: Any) -> None:
    """SIGTERM and SIGINT ask for a graceful stop (a second one changes nothing: the grace is bounded)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop_requested, sig, stop)


def _stop_requested(sig: signal.Signals, stop: Any) -> None:
    log.info("signal %s received: finishing in-flight turns, then stopping", sig.name)
    stop()


async def serve(settings: Settings, stage_names: list[str] | tuple[str, ...]) -> None:
    worker = StageWorker(settings, build_stages(settings, stage_names))
    runtime: ConsumerRuntime | None = None

    def stop() -> None:
        if runtime is not None:
            runtime.request_stop()
        else:
            starting.cancel()

    starting = asyncio.current_task()
    assert starting is not None
    install_stop_signals(stop)
    try:
        runtime = await worker.start()
    except asyncio.CancelledError:
        log.info("stopped while starting")
        await worker.close()
        return
    freeze_startup_heap()  # the clients and models are built: keep them out of the collector's passes
    try:
        await runtime.run()
    finally:
        await worker.close()


def run_worker(settings: Settings, stage_names: list[str] | tuple[str, ...]) -> None:
    """Run until SIGTERM/SIGINT; in-flight turns finish (up to the grace period) before exit."""
    tracing.setup_tracing(settings, f"{settings.service_name}-worker")
    try:
        asyncio.run(serve(settings, stage_names))
    finally:
        tracing.shutdown_tracing()
