"""The enrich stage's own cost against the real Redis: round trips and CPU per turn, no Kafka.

Why: the enrich stage is Redis-bound (admission, rate limit, session load), and ``chatstream bench``
measures the whole pipeline, where its share drowns in the other stages' noise. This drives
``EnrichStage.process`` exactly as the stage runner does (a ``chat.inbound process`` span per turn,
``max_in_flight`` turns at once, a session's turns one after the other) and counts:

- round trips: writes to a Redis connection (a pipeline is one write, a single command is one);
- Redis commands by name (``INFO commandstats`` before and after; EVALSHA counts the scripts);
- this process's CPU (user + system) per turn, spans included (an SDK tracer whose exporter drops).

Usage: ``python -m streams.bench.enrich_micro --turns 4000 [--sessions 500] [--repeat 3]`` with
``CHATSTREAM_REDIS_URL`` set (it writes under its own key prefix and deletes it afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Sequence

import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from processors.records import ChatRequest, now_ms
from processors.session import session_store_from_settings
from streams.config import Settings
from streams.message import InboundMessage


class _Drop(SpanExporter):
    """Spans are built and batched as in the worker, then dropped (no collector in the measurement)."""

    def export(self, spans: Sequence) -> SpanExportResult:  # type: ignore[type-arg]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class CountingConnection(aioredis.Connection):
    """Counts writes to Redis: one per single command, one per pipeline."""

    writes = 0

    async def send_packed_command(self, command, check_health: bool = True) -> None:  # type: ignore[no-untyped-def]
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)


class _Ready:
    async def ready(self) -> None:
        return None


async def _commandstats(client: aioredis.Redis) -> dict[str, int]:
    info = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


async def run(turns: int, sessions: int, in_flight: int) -> dict[str, float]:
    from streams.stages.enrich import EnrichStage

    prefix = f"bench-enrich-{uuid.uuid4().hex[:8]}."
    settings = Settings().derive(topic_prefix=prefix, rate_limit_per_minute=1e9, rate_limit_burst=1_000_000)
    url = settings.redis_connection_url
    client = aioredis.Redis.from_url(url, connection_class=CountingConnection)
    stats_client = aioredis.Redis.from_url(url)
    stage = EnrichStage(settings)
    stage.sessions = session_store_from_settings(client, settings)
    stage.markers = _Ready()  # type: ignore[assignment]
    tracer = trace.get_tracer("bench.enrich")
    requests = [
        ChatRequest(message_id=uuid.uuid4().hex, session_id=f"web:s{i % sessions}", user_id=f"u{i % sessions}",
                    channel="web", text=f"Question {i}: how do I reset my password on the mobile app?",
                    sent_at=now_ms())
        for i in range(turns)
    ]

    async def one(request: ChatRequest) -> int:
        msg = InboundMessage(settings.topics.inbound, 0, 0, request.session_id.encode(), b"")
        with tracer.start_as_current_span(f"{settings.topics.inbound} process", kind=SpanKind.CONSUMER) as span:
            outputs = await stage.process(request, msg, span)
        return len(outputs)

    await stage.sessions.admit(requests[0])  # scripts loaded, connection open: not measured
    requests = requests[1:]
    before = await _commandstats(stats_client)
    writes0 = CountingConnection.writes
    cpu0, wall0 = time.process_time(), time.perf_counter()
    produced = 0
    # max_in_flight turns at once; sessions in one wave are distinct, so a session's turns go in order
    for start in range(0, len(requests), in_flight):
        produced += sum(await asyncio.gather(*(one(r) for r in requests[start : start + in_flight])))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    writes = CountingConnection.writes - writes0
    after = await _commandstats(stats_client)
    n = len(requests)
    commands = {k: (after.get(k, 0) - before.get(k, 0)) / n for k in after if after.get(k, 0) != before.get(k, 0)}
    commands.pop("info", None)
    keys = [k async for k in stats_client.scan_iter(match=f"{stage.sessions.prefix}*", count=1000)]
    for i in range(0, len(keys), 500):
        await stats_client.delete(*keys[i : i + 500])
    await client.aclose()
    await stats_client.aclose()
    assert produced == n, f"{produced} outputs for {n} turns"
    return {
        "turns": n,
        "round_trips_per_turn": writes / n,
        "round_trips_per_wave": writes / -(-n // in_flight),
        "commands_per_turn": commands,  # type: ignore[dict-item]
        "cpu_ms_per_turn": cpu * 1000 / n,
        "wall_ms_per_turn": wall * 1000 / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=4000)
    parser.add_argument("--sessions", type=int, default=500, help="distinct sessions (and users)")
    parser.add_argument("--in-flight", type=int, default=Settings().max_in_flight)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.sessions < args.in_flight:
        parser.error("--sessions must be >= --in-flight (a wave holds one turn per session)")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Drop()))
    trace.set_tracer_provider(provider)
    for _ in range(args.repeat):
        print(json.dumps(asyncio.run(run(args.turns, args.sessions, args.in_flight))), flush=True)
    provider.shutdown()


if __name__ == "__main__":
    main()
