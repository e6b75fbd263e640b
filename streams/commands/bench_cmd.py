"""``chatstream bench``: throughput and latency of the whole pipeline, measured, not guessed.

Runs in its own topic namespace with its own worker and a scripted LLM of known latency, so that
"overhead" (end-to-end latency minus LLM time) is the pipeline's cost alone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from pydantic import SecretStr

from streams.config import Settings


def register(sub) -> None:
    parser = sub.add_parser("bench", help="drive turns through a fresh pipeline and print throughput and latency")
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=0, help="turns per second to offer (0 = as fast as possible)")
    parser.add_argument("--llm-latency-ms", type=float, default=0, help="LLM latency (streamed: time to first token)")
    parser.add_argument("--llm-token-ms", type=float, default=0, help="streamed answers: pause between tokens")
    parser.add_argument("--llm-tokens", type=int, default=0, help="streamed answers: exactly this many tokens")
    parser.add_argument("--sse", action="store_true",
                        help="web turns read through a real gateway's SSE (one stream per session): TTFT at the client")
    parser.add_argument("--sessions", type=int, default=0, help="distinct sessions (default turns/10)")
    parser.add_argument("--in-flight", type=int, default=None, help="worker's max in-flight turns per stage")
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the consumer group")
    parser.add_argument("--timeout", type=float, default=600)
    parser.set_defaults(handler=run)


@dataclass
class BenchResult:
    turns: int
    replies: int
    duplicates: int
    out_of_order_sessions: int
    elapsed_s: float
    latencies_ms: list[float]
    overhead_ms: list[float]
    stage_ms: dict[str, list[int]]
    peak_rss_mb: float
    ttft_ms: list[float] | None = None  # first provisional text on chat.deltas, from sent_at
    sse_ttft_ms: list[float] | None = None  # first delta with text at an SSE client, from sent_at
    sse_reply_ms: list[float] | None = None  # the reply at an SSE client, from sent_at
    sse_repeats: int = 0  # replies an SSE client got more than once

    @property
    def throughput(self) -> float:
        return self.replies / self.elapsed_s if self.elapsed_s else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def drive(settings: Settings, turns: int, rate: float, sessions: int, timeout_s: float, workers: list,
                gateway_url: str | None = None) -> BenchResult:
    from processors.records import now_ms
    from streams.client import ChatClient, new_request

    from processors.records import ChatDelta
    from streams.client import TopicTail

    first_delta_ms: dict[str, float] = {}

    def on_delta(delta: ChatDelta, msg) -> None:  # tail thread; the first piece with text counts
        if delta.text and delta.message_id not in first_delta_ms:
            first_delta_ms[delta.message_id] = time.time() * 1000

    async with ChatClient(settings) as client:
        deltas = TopicTail(settings, settings.topics.deltas, lambda b: client.codec.decode(b, ChatDelta), on_delta)
        await asyncio.to_thread(deltas.start)
        readers = None
        if gateway_url:  # web sessions of the bench tenant, each read through the gateway's SSE
            from streams.dev.sse_probe import SSEReaders

            session_ids = [f"web:{settings.tenant}:{uuid.uuid4().hex[:8]}" for _ in range(sessions)]
            readers = SSEReaders(gateway_url, session_ids)
            await readers.start()
        else:
            session_ids = [f"bench:{uuid.uuid4().hex[:8]}" for _ in range(sessions)]
        channel = "web" if gateway_url else "bench"
        requests = [
            new_request(f"How do I export my data? (turn {i})", session_ids[i % sessions], user_id=f"bench-{i % sessions}",
                        channel=channel, tenant=settings.tenant)
            for i in range(turns)
        ]
        started = time.monotonic()
        interval = 1.0 / rate if rate > 0 else 0.0
        peak_rss = 0.0
        sends = []
        for i, request in enumerate(requests):
            if interval:
                delay = started + i * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            request.sent_at = now_ms()  # latency counts from when the turn is offered, not built
            # not awaited one by one: a channel fleet offers turns concurrently, and a sequential
            # produce-and-wait loop would measure the load generator instead of the pipeline.
            # Tasks start in creation order, so each session's turns are produced in order.
            sends.append(asyncio.create_task(client.send(request)))
            if len(sends) % 500 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*sends)
        waiting = [client.wait_reply(r.message_id, timeout_s) for r in requests]
        done = 0
        for coro in asyncio.as_completed(waiting):
            await coro
            done += 1
            if done % 200 == 0:
                peak_rss = max(peak_rss, *(w.peak_rss_mb() for w in workers))
        elapsed = time.monotonic() - started
        await client.settle(1.0)
        peak_rss = max(peak_rss, *(w.peak_rss_mb() for w in workers))

        latencies, overhead, per_stage = [], [], {}
        for request in requests:
            reply = client.replies[request.message_id][0]
            latencies.append(reply.latency_ms)
            overhead.append(reply.latency_ms - reply.stage_ms.get("llm", 0))
            for stage, ms in reply.stage_ms.items():
                per_stage.setdefault(stage, []).append(ms)
        order_broken = 0
        for sid in session_ids:
            expected = [r.message_id for r in requests if r.session_id == sid]
            got = [r.message_id for r in client.reply_order if r.session_id == sid and r.message_id in set(expected)]
            deduped = list(dict.fromkeys(got))
            order_broken += deduped != expected
        duplicates = sum(len(v) - 1 for v in client.replies.values())
        await asyncio.to_thread(deltas.stop)
        ttft = [first_delta_ms[r.message_id] - r.sent_at for r in requests if r.message_id in first_delta_ms]
        result = BenchResult(turns, len(client.replies), duplicates, order_broken, elapsed, latencies, overhead,
                             per_stage, peak_rss, ttft)
        if readers is not None:
            deadline = time.monotonic() + 10
            while len(readers.reply_ms) < turns and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await readers.close()
            result.sse_ttft_ms = [readers.first_delta_ms[r.message_id] - r.sent_at for r in requests
                                  if r.message_id in readers.first_delta_ms]
            result.sse_reply_ms = [readers.reply_ms[r.message_id] - r.sent_at for r in requests
                                   if r.message_id in readers.reply_ms]
            result.sse_repeats = sum(n - 1 for n in readers.replies_seen.values())
        return result


def report(result: BenchResult, llm_latency_ms: float, in_flight: int) -> str:
    lines = [
        f"turns {result.turns}  replies {result.replies}  duplicates {result.duplicates}  "
        f"sessions out of order {result.out_of_order_sessions}",
        f"elapsed {result.elapsed_s:.2f} s  throughput {result.throughput:.1f} turns/s  (LLM latency {llm_latency_ms:.0f} ms, "
        f"in flight {in_flight}; ideal at this latency {in_flight / (llm_latency_ms / 1000):.0f} turns/s)"
        if llm_latency_ms
        else f"elapsed {result.elapsed_s:.2f} s  throughput {result.throughput:.1f} turns/s  (LLM latency 0 ms)",
        "end-to-end latency ms  p50 {:.0f}  p95 {:.0f}  p99 {:.0f}".format(
            *(percentile(result.latencies_ms, q) for q in (50, 95, 99))
        ),
        "pipeline overhead ms   p50 {:.0f}  p95 {:.0f}  p99 {:.0f}   (latency minus LLM time)".format(
            *(percentile(result.overhead_ms, q) for q in (50, 95, 99))
        ),
        "time to first token ms p50 {:.0f}  p95 {:.0f}  p99 {:.0f}   ({} turns streamed; first text on chat.deltas, "
        "LLM TTFT {:.0f} ms)".format(
            *(percentile(result.ttft_ms or [], q) for q in (50, 95, 99)), len(result.ttft_ms or []), llm_latency_ms
        ),
        "per-stage processing ms (p50 / p99):",
    ]
    if result.sse_ttft_ms is not None:
        lines.append("at the SSE client ms  TTFT p50 {:.0f}  p95 {:.0f}  p99 {:.0f}   reply p50 {:.0f}  p99 {:.0f}   "
                     "({} first deltas, {} replies, {} repeated)".format(
                         *(percentile(result.sse_ttft_ms, q) for q in (50, 95, 99)),
                         *(percentile(result.sse_reply_ms or [], q) for q in (50, 99)),
                         len(result.sse_ttft_ms), len(result.sse_reply_ms or []), result.sse_repeats))
    for stage in ("enrich", "retrieve", "generate", "llm", "validate"):
        values = [float(v) for v in result.stage_ms.get(stage, [])]
        if values:
            lines.append(f"  {stage:9s} {percentile(values, 50):6.0f} / {percentile(values, 99):6.0f}")
    lines.append(f"worker peak RSS {result.peak_rss_mb:.0f} MiB (largest worker)")
    return "\n".join(lines)


def run(args, settings: Settings) -> int:
    from streams.dev.llm_process import LLMServerProcess
    from streams.dev.worker_process import WorkerProcess
    from streams.topics import create_topics

    run_id = uuid.uuid4().hex[:8]
    sessions = args.sessions or max(1, args.turns // 10)
    with LLMServerProcess(args.llm_latency_ms) as llm:
        if args.llm_token_ms or args.llm_tokens:
            import httpx

            httpx.post(f"{llm.base_url[:-3]}/_script", json={"token_ms": args.llm_token_ms, "tokens": args.llm_tokens},
                       timeout=10).raise_for_status()
        overrides = dict(
            topic_prefix=f"bench-{run_id}.",
            consumer_group=f"bench-{run_id}",
            llm_base_url=llm.base_url,
            llm_api_key=SecretStr("bench"),
            rate_limit_per_minute=1e9,
            rate_limit_burst=1_000_000,
        )
        if args.in_flight:
            overrides["max_in_flight"] = args.in_flight
        bench_settings = settings.derive(**overrides)
        create_topics(bench_settings)
        workers = [WorkerProcess(bench_settings) for _ in range(args.workers)]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.wait_started(120)
            print(f"bench {run_id}: {args.turns} turns over {sessions} sessions, rate {args.rate or 'max'}/s, "
                  f"LLM latency {args.llm_latency_ms:.0f} ms (then {args.llm_token_ms:g} ms x {args.llm_tokens} tokens), "
                  f"worker pids {' '.join(str(w.pid) for w in workers)}")
            if args.sse:
                from streams.dev.sse_probe import GatewayProcess

                with GatewayProcess(bench_settings) as gateway:
                    result = asyncio.run(drive(bench_settings, args.turns, args.rate, sessions, args.timeout, workers,
                                               gateway.url))
            else:
                result = asyncio.run(drive(bench_settings, args.turns, args.rate, sessions, args.timeout, workers))
            print(report(result, args.llm_latency_ms, bench_settings.max_in_flight * args.workers))
        finally:
            for worker in workers:
                worker.terminate(60)
    return 0 if result.replies == args.turns and result.duplicates == 0 else 1
