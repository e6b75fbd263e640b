"""``chatstream stats``: a live terminal view of what the worker is doing.

Reads the worker's Prometheus endpoint and the consumer lag, and shows per stage throughput and
latency, dead letters, LLM calls by outcome, replies by status (escalation rate), tokens and lag, so
an operator sees at a glance which stage is slow and which integration fails.
"""

from __future__ import annotations

import time
from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.live import Live
from rich.table import Table

from streams.cli import CommandError
from streams.config import Settings
from streams.pipeline import STAGE_NAMES


def register(sub) -> None:
    parser = sub.add_parser("stats", help="live summary of the worker's metrics and consumer lag")
    parser.add_argument("--url", help="worker metrics URL (default http://127.0.0.1:<metrics_port>/metrics)")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.set_defaults(handler=run)


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(url, timeout=5).text
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), sample.value))
    return samples


def _find(samples, prefix: str, suffix: str) -> list[tuple[dict[str, str], float]]:
    for name, values in samples.items():
        if name.startswith(prefix) and name.endswith(suffix):
            return values
    return []


def _by(values, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, value in values:
        out[labels.get(label, "")] += value
    return out


def render(samples, previous, elapsed: float, lag: dict[str, int | str]) -> Group:
    records = _find(samples, "chatstream_stage_records", "_total")
    prev_records = _find(previous, "chatstream_stage_records", "_total") if previous else []
    counts, prev_counts = _by(records, "stage"), _by(prev_records, "stage")
    dur_sum = _by(_find(samples, "chatstream_stage_duration", "_sum"), "stage")
    dur_count = _by(_find(samples, "chatstream_stage_duration", "_count"), "stage")
    dead = _by(_find(samples, "chatstream_deadletters", "_total"), "stage")
    stages = Table(title="stages")
    for col in ("stage", "records", "rate/s", "mean ms", "dead letters"):
        stages.add_column(col, justify="right" if col != "stage" else "left")
    for stage in STAGE_NAMES:
        rate = (counts.get(stage, 0) - prev_counts.get(stage, 0)) / elapsed if previous and elapsed else 0.0
        mean = dur_sum.get(stage, 0) / dur_count[stage] * 1000 if dur_count.get(stage) else 0.0
        stages.add_row(stage, f"{counts.get(stage, 0):.0f}", f"{rate:.1f}", f"{mean:.1f}", f"{dead.get(stage, 0):.0f}")
    replies = _by(_find(samples, "chatstream_replies", "_total"), "status")
    total = sum(replies.values())
    outcome = Table(title="replies and integrations")
    outcome.add_column("what")
    outcome.add_column("value", justify="right")
    for status, value in sorted(replies.items()):
        outcome.add_row(f"replies {status}", f"{value:.0f}")
    outcome.add_row("escalation rate", f"{(replies.get('ESCALATED', 0) / total * 100) if total else 0:.1f} %")
    for labels, value in _find(samples, "chatstream_llm_calls", "_total"):
        outcome.add_row(f"LLM {labels.get('provider')} {labels.get('outcome')}", f"{value:.0f}")
    for labels, value in _find(samples, "chatstream_llm_tokens", "_total"):
        outcome.add_row(f"tokens {labels.get('model')} {labels.get('direction')}", f"{value:.0f}")
    for labels, value in _find(samples, "chatstream_transient_retries", "_total"):
        outcome.add_row(f"retries {labels.get('stage')}/{labels.get('step')}", f"{value:.0f}")
    lags = Table(title="consumer lag")
    lags.add_column("topic")
    lags.add_column("lag", justify="right")
    for topic, value in lag.items():
        lags.add_row(topic, str(value))
    return Group(stages, outcome, lags)


def run(args, settings: Settings) -> int:
    from streams.lag import consumer_lag

    url = args.url or f"http://{settings.bind_host}:{settings.metrics_port}/metrics"
    previous, last = None, time.monotonic()

    def snapshot():
        nonlocal previous, last
        try:
            samples = scrape(url)
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot read worker metrics at {url}: {exc}. Is `chatstream worker` running?")
        try:
            lag: dict[str, int | str] = dict(consumer_lag(settings))
        except Exception as exc:  # show why, keep the rest of the view
            lag = {"(unavailable)": f"{type(exc).__name__}: {exc}"[:80]}
        now = time.monotonic()
        view = render(samples, previous, now - last, lag)
        previous, last = samples, now
        return view

    if args.once:
        from rich.console import Console

        Console().print(snapshot())
        return 0
    with Live(snapshot(), refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(args.interval)
                live.update(snapshot())
        except KeyboardInterrupt:
            return 0
