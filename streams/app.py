"""The Faust worker: one agent per stage, each feeding an in-flight window.

Read top to bottom this is the whole runtime: Faust owns consumption, partition assignment and
offset commits; each agent reads its topic with manual acks and hands every event to the stage's
``InFlightWindow``, which runs up to ``max_in_flight`` turns at once, one at a time per session, and
acks in offset order. Records are produced with confluent-kafka (acks=all, idempotent) and awaited
before the ack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

import faust

from streams import metrics, tracing
from streams.codec import Codec, make_codec
from streams.config import Settings
from streams.inflight import InFlightWindow
from streams.message import InboundMessage
from streams.producer import PIPELINE_MAX_REQUEST, AsyncProducer
from streams.stage import Stage, StageRunner
from streams.stages import build_stages, clients

log = logging.getLogger(__name__)


def _headers(raw: Any) -> list[tuple[str, bytes | None]]:
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(k if isinstance(k, str) else k.decode(), v) for k, v in items]


def to_inbound(event: Any) -> InboundMessage:
    m = event.message
    return InboundMessage(
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        key=m.key,
        value=m.value,
        headers=_headers(m.headers),
        timestamp_ms=int((m.timestamp or 0) * 1000),
    )


class Runtime:
    """What the agents of one worker share: codec, producer, started stages, shutdown."""

    def __init__(self, settings: Settings, stages: list[Stage]) -> None:
        self.settings = settings
        self.stages = stages
        self.codec: Codec = make_codec(settings)
        self.producer: AsyncProducer | None = None
        self._started = asyncio.Lock()
        self._is_started = False
        self._active_agents = 0
        self.windows: dict[str, InFlightWindow] = {}
        # Bumped when a rebalance or a shutdown begins: events read before it must not start.
        self.epoch = 0
        self.stopping = False
        self._assignment: set[tuple[str, int]] = set()

    async def on_partitions_revoked(self, app: faust.App, revoked: set[Any]) -> None:
        """Finish the revoked partitions' turns and commit them before the partitions move.

        Otherwise the next owner reads them again from the last commit while this worker is still
        producing their outputs: two copies of a turn in flight in two processes, which neither the
        session chain nor the reply marker can serialise. Bounded by ``shutdown_grace_s``.
        """
        self.epoch += 1
        keys = {(tp.topic, tp.partition) for tp in revoked}
        if not keys or not self.windows:
            return
        grace = self.settings.shutdown_grace_s
        running = sum(w.in_flight for w in self.windows.values())
        began = time.monotonic()
        results = await asyncio.gather(*(w.drain_partitions(keys, grace) for w in self.windows.values()))
        if not all(results):
            log.warning("rebalance: some turns of revoked partitions did not finish within %.0f s", grace)
        await _commit(app)
        for window in self.windows.values():
            # turns read but not started stay unacked; if the partition comes back, Faust re-reads them
            window.forget_partitions(keys)
        log.info(
            "rebalance: %d partitions revoked with %d turns in flight; drained and committed in %.2f s",
            len(keys), running, time.monotonic() - began,
        )

    def on_partitions_assigned(self, assigned: set[Any]) -> None:
        keys = {(tp.topic, tp.partition) for tp in assigned}
        newly, self._assignment = keys - self._assignment, keys
        if newly and self._is_started:
            for stage in self.stages:
                stage.on_partitions_assigned(newly)

    async def quiesce(self, app: faust.App) -> None:
        """Graceful stop, first half: stop pulling, finish in-flight turns, commit their offsets.

        Runs before Faust stops anything: Faust's own stop order (fetcher, consumer, then the
        agents) would commit before the turns finish and leave them to be redone after a restart.
        """
        self.stopping = True
        grace = self.settings.shutdown_grace_s
        try:
            assignment = app.consumer.assignment()
            if assignment:
                app.consumer.pause_partitions(assignment)
        except Exception:  # not started yet, or already closing: nothing to pause
            log.debug("pausing partitions before shutdown failed", exc_info=True)
        running = sum(w.in_flight for w in self.windows.values())
        log.info("shutdown: finishing %d in-flight turns (up to %.0f s)", running, grace)
        results = await asyncio.gather(*(w.drain(grace) for w in self.windows.values()))
        if not all(results):
            log.warning("shutdown: in-flight turns did not finish within %.0f s; they will be redone", grace)
        await _commit(app)

    async def ensure_started(self) -> None:
        async with self._started:
            if self._is_started:
                return
            self.producer = AsyncProducer(self.settings.kafka_bootstrap, **PIPELINE_MAX_REQUEST)
            for stage in self.stages:
                stage.attach_producer(self.producer, self.codec)
                await stage.start(self.codec)
            self._is_started = True
            metrics.register_inflight_gauge(self.windows)
            log.info("stages started: %s", ", ".join(s.name for s in self.stages))

    async def close(self) -> None:
        for stage in self.stages:
            try:
                await stage.stop()
            except Exception:
                log.exception("stopping stage %s", stage.name)
        if self.producer is not None:
            await self.producer.close()
        await clients.close_all()
        tracing.shutdown_tracing()

    def agent_for(self, stage: Stage):
        runtime = self

        async def agent(stream: Any) -> None:
            await runtime.ensure_started()
            assert runtime.producer is not None
            runner = StageRunner(stage, runtime.settings, runtime.codec, runtime.producer)
            manual = stream.noack()
            window = InFlightWindow(runtime.settings.max_in_flight, on_release=manual.ack)
            runtime.windows[stage.name] = window
            runtime._active_agents += 1
            try:
                async for event in manual.events():
                    msg = to_inbound(event)
                    epoch = runtime.epoch
                    await window.submit(
                        partition=(msg.topic, msg.partition),
                        offset=msg.offset,
                        chain_key=msg.key,
                        work=partial(runner.handle, msg),
                        token=event,
                        still_wanted=lambda epoch=epoch: runtime.epoch == epoch and not runtime.stopping,
                    )
            finally:
                # after a graceful quiesce the grace period is used up: what is left is redone later
                finished = await window.drain(1.0 if runtime.stopping else runtime.settings.shutdown_grace_s)
                if not finished:
                    log.warning("%s: in-flight turns did not finish before the deadline", stage.name)
                    await window.cancel()
                runtime._active_agents -= 1
                if runtime._active_agents == 0:
                    await runtime.close()

        agent.__name__ = f"{stage.name}_agent"
        return agent


async def _commit(app: faust.App) -> None:
    try:
        await app.consumer.commit()
    except Exception:
        log.exception("offset commit failed; the uncommitted turns will be redone (replies stay single)")


class GracefulWorker(faust.Worker):
    """A Faust worker whose SIGTERM/SIGINT first lets in-flight turns finish and commit.

    Hooks mode's ``_schedule_shutdown`` (the one place both signals go through) so the drain runs
    while the consumer still owns its partitions and can commit; then the normal stop follows.
    """

    def __init__(self, app: faust.App, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._runtime = runtime

    def _schedule_shutdown(self, signal: Any) -> None:
        if not self._signal_stop_time:
            self._signal_stop_time = self.loop.time()
            self._signal_stop_future = asyncio.ensure_future(self._drain_then_stop(signal), loop=self.loop)

    async def _drain_then_stop(self, signal: Any) -> None:
        self.log.info("Signal received: %s (%s)", signal, signal.value)
        try:
            await self._runtime.quiesce(self.app)
        except Exception:
            log.exception("draining before shutdown failed")
        await self.stop()
        if self._starting_fut is not None and not self._starting_fut.done():
            self._starting_fut.cancel()


def create_app(settings: Settings, stage_names: list[str] | tuple[str, ...]) -> tuple[faust.App, Runtime]:
    tracing.setup_tracing(settings, f"{settings.service_name}-worker")
    stages = build_stages(settings, stage_names)
    runtime = Runtime(settings, stages)
    app = faust.App(
        settings.consumer_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
        datadir=str(settings.home / "faust"),
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        broker_commit_every=500,
        broker_commit_interval=1.0,
        broker_max_poll_records=500,
        producer_acks=-1,
        stream_wait_empty=False,
        # a worker killed with -9 sends no LeaveGroup: its partitions wait out the session timeout
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=max(0.5, min(3.0, settings.kafka_session_timeout_s / 4)),
    )
    for stage in stages:
        topic = app.topic(
            stage.source,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        app.agent(topic, name=f"chatstream.{stage.name}")(runtime.agent_for(stage))

    @app.on_partitions_revoked.connect
    async def _drain_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        await runtime.on_partitions_revoked(app, revoked)

    @app.on_partitions_assigned.connect
    async def _take_over(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        runtime.on_partitions_assigned(assigned)

    return app, runtime


def run_worker(settings: Settings, stage_names: list[str] | tuple[str, ...], loglevel: str = "info") -> None:
    """Run until SIGTERM/SIGINT; in-flight turns finish (up to the grace period) before exit."""
    app, runtime = create_app(settings, stage_names)
    worker = GracefulWorker(app, runtime, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
