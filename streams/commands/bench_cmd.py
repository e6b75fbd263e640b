"""``chatstream bench``: throughput and latency of the whole pipeline, measured, not guessed.

Runs in its own topic namespace with its own worker and a scripted LLM of known latency, so that
"overhead" (end-to-end latency minus LLM time) is the pipeline's cost alone.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from streams.config import Settings
from streams.pipeline import LLM_TIMING, TIMING_KEYS


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
    parser.add_argument(
        "--worker-stages", action="append", default=None, metavar="STAGE,STAGE",
        help="one worker process running these stages (repeat for more processes, e.g. "
             "--worker-stages enrich,retrieve,validate --worker-stages generate); instead of --workers",
    )
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--baseline", action="store_true",
        help="then push the same turns through the same processors in this process, without Kafka, and print the ratios",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object instead of text")
    parser.add_argument("--keep-topics", action="store_true",
                        help="leave the run's namespace: its bench-<id>.* topics and Redis keys (deleted by default)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the worker(s) with py-spy (--gil) and print their Python time by library")
    from streams.commands import bench_kb  # retrieval cost at knowledge-base size (issue 13)

    bench_kb.add_arguments(parser)
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
    cpu: Any = None  # streams.bench.cpu.CpuWindow over the run, when measured
    statuses: dict[str, int] | None = None  # replies by status, and by "STATUS: reason" when not ANSWERED
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


def bench_requests(
    turns: int, sessions: int, *, tenant: str | None = None, web: bool = False, tag: str | None = None
) -> tuple[list[str], list]:
    """(session ids, requests): ``turns`` turns spread round-robin over ``sessions`` fresh sessions.

    ``web``: web sessions of ``tenant`` (``--sse`` reads them through a gateway, as a browser would).
    ``tag`` makes the texts this run's own: query vectors are shared through Redis for a day, so a
    text seen by an earlier run (or by the pipeline before its ``--baseline``) would skip the model
    and make that run look cheaper than the one before it. Five digits, as ``searchable_text`` keeps
    them (longer digit runs and hex read as ids and are dropped from the query).
    """
    tag = tag or f"{uuid.uuid4().int % 90000 + 10000}"
    from streams.client import new_request

    if web:
        session_ids = [f"web:{tenant}:{uuid.uuid4().hex[:8]}" for _ in range(sessions)]
    else:
        session_ids = [f"bench:{uuid.uuid4().hex[:8]}" for _ in range(sessions)]
    extra = {"tenant": tenant} if tenant is not None else {}
    requests = [
        new_request(f"How do I export my data? (turn {i} of run {tag})", session_ids[i % sessions], user_id=f"bench-{i % sessions}",
                    channel="web" if web else "bench", **extra)
        for i in range(turns)
    ]
    return session_ids, requests


async def drive(
    settings: Settings, turns: int, rate: float, sessions: int, timeout_s: float, workers: list, meter: Any = None,
    gateway_url: str | None = None,
) -> BenchResult:
    """Offer the turns, wait for every reply; ``meter`` (a CpuMeter) spans first offer to last reply.

    Also tails chat.deltas for the time to first token; with ``gateway_url`` each session is read
    through the gateway's SSE as a browser would.
    """
    from processors.records import ChatDelta, now_ms
    from streams.client import ChatClient, TopicTail

    first_delta_ms: dict[str, float] = {}

    def on_delta(delta: ChatDelta, msg) -> None:  # tail thread; the first piece with text counts
        if delta.text and delta.message_id not in first_delta_ms:
            first_delta_ms[delta.message_id] = time.time() * 1000

    async with ChatClient(settings) as client:
        deltas = TopicTail(settings, settings.topics.deltas, lambda b: client.codec.decode(b, ChatDelta), on_delta)
        await asyncio.to_thread(deltas.start)
        session_ids, requests = bench_requests(turns, sessions, tenant=settings.tenant, web=bool(gateway_url))
        readers = None
        if gateway_url:  # web sessions of the bench tenant, each read through the gateway's SSE
            from streams.dev.sse_probe import SSEReaders

            readers = SSEReaders(gateway_url, session_ids)
            await readers.start()
        if meter is not None:
            meter.start()
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
        window = meter.stop() if meter is not None else None
        await client.settle(1.0)
        peak_rss = max(peak_rss, *(w.peak_rss_mb() for w in workers))

        latencies, overhead, per_stage = [], [], {}
        for request in requests:
            reply = client.replies[request.message_id][0]
            latencies.append(reply.latency_ms)
            overhead.append(reply.latency_ms - reply.stage_ms.get(LLM_TIMING, 0))
            for stage, ms in reply.stage_ms.items():
                per_stage.setdefault(stage, []).append(ms)
        order_broken = 0
        for sid in session_ids:
            expected = [r.message_id for r in requests if r.session_id == sid]
            got = [r.message_id for r in client.reply_order if r.session_id == sid and r.message_id in set(expected)]
            deduped = list(dict.fromkeys(got))
            order_broken += deduped != expected
        duplicates = sum(len(v) - 1 for v in client.replies.values())
        from streams.bench.figures import count_statuses

        statuses = count_statuses([client.replies[r.message_id][0] for r in requests])
        await asyncio.to_thread(deltas.stop)
        ttft = [first_delta_ms[r.message_id] - r.sent_at for r in requests if r.message_id in first_delta_ms]
        result = BenchResult(
            turns, len(client.replies), duplicates, order_broken, elapsed, latencies, overhead, per_stage, peak_rss, window,
            statuses, ttft,
        )
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
    ]
    if result.sse_ttft_ms is not None:
        lines.append("at the SSE client ms  TTFT p50 {:.0f}  p95 {:.0f}  p99 {:.0f}   reply p50 {:.0f}  p99 {:.0f}   "
                     "({} first deltas, {} replies, {} repeated)".format(
                         *(percentile(result.sse_ttft_ms, q) for q in (50, 95, 99)),
                         *(percentile(result.sse_reply_ms or [], q) for q in (50, 99)),
                         len(result.sse_ttft_ms), len(result.sse_reply_ms or []), result.sse_repeats))
    lines.append("per-stage processing ms (p50 / p99):")
    for stage in TIMING_KEYS:
        values = [float(v) for v in result.stage_ms.get(stage, [])]
        if values:
            lines.append(f"  {stage:9s} {percentile(values, 50):6.0f} / {percentile(values, 99):6.0f}")
    lines.append(f"worker peak RSS {result.peak_rss_mb:.0f} MiB (largest worker)")
    if result.statuses:
        lines.append("replies by status: " + ", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items())))
    return "\n".join(lines)


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value  # JSON has no NaN


def latency_json(latencies_ms: list[float], overhead_ms: list[float]) -> dict[str, Any]:
    return {
        "latency_ms": {f"p{q}": _finite(percentile(latencies_ms, q)) for q in (50, 95, 99)},
        "overhead_ms": {f"p{q}": _finite(percentile(overhead_ms, q)) for q in (50, 95, 99)},
    }


def result_json(result: BenchResult) -> dict[str, Any]:
    from streams.bench.figures import cpu_json

    return {
        "turns": result.turns,
        "replies": result.replies,
        "duplicates": result.duplicates,
        "out_of_order_sessions": result.out_of_order_sessions,
        "elapsed_s": round(result.elapsed_s, 3),
        "throughput": round(result.throughput, 2),
        **latency_json(result.latencies_ms, result.overhead_ms),
        "stage_ms": {
            stage: {"p50": percentile([float(v) for v in values], 50), "p99": percentile([float(v) for v in values], 99)}
            for stage, values in result.stage_ms.items()
        },
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        "ttft_ms": {f"p{q}": _finite(percentile(result.ttft_ms or [], q)) for q in (50, 95, 99)},
        "turns_streamed": len(result.ttft_ms or []),
        "sse": None if result.sse_ttft_ms is None else {
            "ttft_ms": {f"p{q}": _finite(percentile(result.sse_ttft_ms, q)) for q in (50, 95, 99)},
            "reply_ms": {f"p{q}": _finite(percentile(result.sse_reply_ms or [], q)) for q in (50, 95, 99)},
            "replies": len(result.sse_reply_ms or []),
            "repeated": result.sse_repeats,
        },
        "statuses": result.statuses,
        "cpu": cpu_json(result.cpu, result.turns),
    }


def baseline_json(result: Any) -> dict[str, Any]:
    from streams.bench.figures import cpu_json

    return {
        "turns": result.turns,
        "replies": len(result.replies),
        "statuses": result.statuses,
        "out_of_order_sessions": result.out_of_order_sessions,
        "elapsed_s": round(result.elapsed_s, 3),
        "throughput": round(result.throughput, 2),
        **latency_json(result.latencies_ms, result.overhead_ms),
        "cpu": cpu_json(result.cpu, result.turns),
    }


def ratios(pipeline: BenchResult, baseline: Any) -> dict[str, float | None]:
    """pipeline / baseline, from one invocation: throughput, machine CPU per turn, main process CPU per turn."""
    from streams.bench.figures import ratio

    out = {"throughput": ratio(pipeline.throughput, baseline.throughput)}
    if pipeline.cpu is not None and baseline.cpu is not None:
        p, b = pipeline.cpu.per_turn_ms(pipeline.turns), baseline.cpu.per_turn_ms(baseline.turns)
        out["machine_cpu_per_turn"] = ratio(p["machine"], b["machine"])
        # the worker(s) against the one baseline process (which also generates its load)
        out["worker_cpu_per_turn"] = ratio(p.get("worker", 0.0), b.get("bench", 0.0))
    return out


def baseline_report(result: Any, pipeline: BenchResult) -> str:
    from streams.bench.figures import cpu_lines

    statuses = ", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items()))
    lines = [
        "baseline: the same turns through the same processors in this process, no Kafka",
        f"  replies {len(result.replies)} ({statuses})  sessions out of order {result.out_of_order_sessions}",
        f"  elapsed {result.elapsed_s:.2f} s  throughput {result.throughput:.1f} turns/s",
        "  end-to-end latency ms  p50 {:.0f}  p95 {:.0f}  p99 {:.0f}".format(
            *(percentile(result.latencies_ms, q) for q in (50, 95, 99))
        ),
        "  pipeline overhead ms   p50 {:.0f}  p95 {:.0f}  p99 {:.0f}".format(
            *(percentile(result.overhead_ms, q) for q in (50, 95, 99))
        ),
    ]
    if result.cpu is not None:
        lines += ["  " + line for line in cpu_lines(result.cpu, result.turns, " (bench = processors + load)")]
    r = ratios(pipeline, result)
    lines.append(
        "pipeline / baseline: throughput {}  machine CPU per turn {}  worker(s) / baseline process CPU per turn {}".format(
            *(f"{r[k]:.2f}" if r.get(k) is not None else "–" for k in ("throughput", "machine_cpu_per_turn", "worker_cpu_per_turn"))
        )
    )
    return "\n".join(lines)


def _start_profilers(workers: list) -> list:
    from streams.bench.profile import GilProfiler

    profilers = [GilProfiler(w.pid) for w in workers]
    for profiler in profilers:
        profiler.start()
    return profilers


def _stop_profilers(profilers: list) -> Any:
    """One profile of all workers (their samples added up)."""
    from streams.bench.profile import Profile

    merged = Profile()
    for profiler in profilers:
        merged.samples.update(profiler.stop().samples)
    return merged


def _stage_group(group: str) -> list[str]:
    """``enrich,retrieve`` -> the stage names, checked against the pipeline's table."""
    from streams.pipeline import STAGE_NAMES

    names = [name.strip() for name in group.split(",") if name.strip()]
    if not names or any(name not in STAGE_NAMES for name in names):
        raise SystemExit(f"--worker-stages {group!r}: stages are {', '.join(STAGE_NAMES)}")
    return names


def run(args, settings: Settings) -> int:
    if getattr(args, "kb", None):
        from streams.commands import bench_kb

        return bench_kb.run(args, settings)
    import json
    import os

    from streams.bench.baseline import run_baseline
    from streams.bench.cpu import CpuMeter, stack_pids
    from streams.bench.figures import cpu_lines
    from streams.commands.run_namespace import delete_run_namespace
    from streams.dev.llm_process import LLMServerProcess
    from streams.dev.worker_process import WorkerProcess
    from streams.topics import create_topics

    run_id = uuid.uuid4().hex[:8]
    sessions = args.sessions or max(1, args.turns // 10)
    say = (lambda *a, **k: None) if args.json else print
    baseline = profile = None
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
        if settings.embedding_shared_cache_ttl_s > 0:
            # every run asks its own questions, so their shared vectors serve no later run: let them
            # go after 10 minutes instead of a day (30,000 of them after an afternoon of benches)
            overrides["embedding_shared_cache_ttl_s"] = min(settings.embedding_shared_cache_ttl_s, 600.0)
        if args.in_flight:
            overrides["max_in_flight"] = args.in_flight
        if (args.llm_token_ms or args.llm_tokens) and "bench" not in settings.llm_stream_channels:
            # a streaming run measures the time to first token on chat.deltas: this bench is then a
            # channel that shows pieces (--sse turns are web turns, which have them anyway)
            overrides["llm_stream_channels"] = [*settings.llm_stream_channels, "bench"]
        bench_settings = settings.derive(**overrides)
        create_topics(bench_settings)
        services = stack_pids(bench_settings)
        if args.worker_stages:
            workers = [WorkerProcess(bench_settings, stages=_stage_group(group)) for group in args.worker_stages]
        else:
            workers = [WorkerProcess(bench_settings) for _ in range(args.workers)]
        try:
            try:
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.wait_started(120)
                say(f"bench {run_id}: {args.turns} turns over {sessions} sessions, rate {args.rate or 'max'}/s, "
                    f"LLM latency {args.llm_latency_ms:.0f} ms (then {args.llm_token_ms:g} ms x {args.llm_tokens} tokens), "
                    f"worker pids {' '.join(str(w.pid) for w in workers)}")
                meter = CpuMeter(
                    {"worker": [w.pid for w in workers], **services, "llm": [llm.proc.pid], "bench": [os.getpid()]}
                )
                profilers = _start_profilers(workers) if args.profile else []
                if args.sse:
                    from streams.dev.sse_probe import GatewayProcess

                    with GatewayProcess(bench_settings) as gateway:
                        result = asyncio.run(drive(bench_settings, args.turns, args.rate, sessions, args.timeout, workers,
                                                   meter, gateway.url))
                else:
                    result = asyncio.run(drive(bench_settings, args.turns, args.rate, sessions, args.timeout, workers, meter))
                profile = _stop_profilers(profilers) if profilers else None
                say(report(result, args.llm_latency_ms, bench_settings.max_in_flight * len(workers)))
                if result.cpu is not None:
                    say("\n".join(cpu_lines(result.cpu, result.turns)))
                if profile is not None:
                    from streams.bench.profile import profile_lines

                    say("\n".join(profile_lines(profile)))
            finally:
                for worker in workers:
                    worker.terminate(60)
            if args.baseline:
                from streams import tracing

                tracing.setup_tracing(bench_settings, f"{bench_settings.service_name}-baseline")
                _, requests = bench_requests(args.turns, sessions, tenant=bench_settings.tenant)  # its own texts
                meter = CpuMeter({**services, "llm": [llm.proc.pid], "bench": [os.getpid()]})
                baseline = asyncio.run(run_baseline(bench_settings, requests, args.rate, args.timeout, meter))
                tracing.shutdown_tracing()
                say(baseline_report(baseline, result))
        finally:
            if not args.keep_topics:  # the baseline shares the run's Redis namespace: both are done now
                delete_run_namespace(bench_settings, say)
    if args.json:
        figures: dict[str, Any] = {
            "run_id": run_id,
            "turns": args.turns,
            "sessions": sessions,
            "rate": args.rate,
            "llm_latency_ms": args.llm_latency_ms,
            "llm_token_ms": args.llm_token_ms,
            "llm_tokens": args.llm_tokens,
            "sse": args.sse,
            "workers": args.workers,
            "in_flight": bench_settings.max_in_flight,
            "pipeline": result_json(result),
        }
        if profile is not None:
            figures["worker_gil_profile"] = {"samples": profile.total, "libraries_pct": profile.libraries(),
                                             "buckets_pct": profile.share()}
        if baseline is not None:
            figures["baseline"] = baseline_json(baseline)
            figures["pipeline_over_baseline"] = ratios(result, baseline)
        print(json.dumps(figures, indent=2))
    ok = result.replies == args.turns and result.duplicates == 0
    if baseline is not None:
        ok = ok and len(baseline.replies) == args.turns
    return 0 if ok else 1
