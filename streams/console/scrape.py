"""The worker's Prometheus endpoint and the consumer lag, sampled on an interval into a bounded ring.

Counters become rates between consecutive samples; gauges are shown as sampled. The ring holds
``capacity`` samples (default 720: an hour at 5 s), so memory stays flat however long it runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from streams.config import Settings
from streams.lag import LagProbe
from streams.pipeline import stage_sources

log = logging.getLogger("chatstream.console.scrape")

Key = tuple[str, tuple[tuple[str, str], ...]]  # sample name, sorted labels


@dataclass
class Sample:
    at: float
    values: dict[Key, float]
    lag: dict[str, int] = field(default_factory=dict)  # "group topic" -> records behind
    error: str | None = None


def parse(text: str) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def by_label(values: dict[Key, float], name: str, *labels: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, lbls), v in values.items():
        if n == name:
            d = dict(lbls)
            key = " ".join(d.get(label, "") for label in labels)
            out[key] = out.get(key, 0.0) + v
    return out


class MetricsScraper:
    """A daemon thread: scrape ``url`` and the lag every ``interval_s``; ``series`` turns the ring into charts."""

    def __init__(self, settings: Settings, url: str | None = None, interval_s: float | None = None,
                 capacity: int = 720) -> None:
        self.settings = settings
        self.url = url or f"http://{settings.bind_host}:{settings.metrics_port}/metrics"
        self.interval_s = interval_s or settings.console_scrape_interval_s
        self.ring: deque[Sample] = deque(maxlen=capacity)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-scrape", daemon=True)
        self._probe: LagProbe | None = None

    def start(self) -> "MetricsScraper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._probe is not None:
            self._probe.close()

    def _lag(self) -> dict[str, int]:
        s = self.settings
        if self._probe is None:
            self._probe = LagProbe(s)
        out: dict[str, int] = {}
        groups = {s.consumer_group: stage_sources(s),
                  s.deliver_group: [s.topics.outbound]}
        for group, topics in groups.items():
            for topic, lag in self._probe.lag(group, topics, timeout_s=2.0).items():
                out[f"{group} {topic}"] = lag
        return out

    def sample(self) -> Sample:
        values: dict[Key, float] = {}
        error = None
        try:
            values = parse(httpx.get(self.url, timeout=3).text)
        except (httpx.HTTPError, ValueError) as exc:
            error = f"worker metrics at {self.url}: {type(exc).__name__}: {exc}"
        try:
            lag = self._lag()
        except Exception as exc:  # Kafka down: keep the rest of the page
            lag, error = {}, error or f"consumer lag: {type(exc).__name__}: {exc}"
        return Sample(time.time(), values, lag, error)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.ring.append(self.sample())
            self._stop.wait(self.interval_s)

    def series(self, since_s: float) -> dict[str, Any]:
        """Rates and gauges over the samples newer than ``since_s`` (epoch seconds)."""
        samples = [s for s in list(self.ring) if s.at >= since_s]
        x: list[int] = []
        out: dict[str, dict[str, list[float | None]]] = {
            "stage_rate": {}, "llm_rate": {}, "circuit": {}, "lag": {}, "retrieval_top_score": {}, "inflight": {},
        }

        def put(group: str, key: str, i: int, value: float | None) -> None:
            out[group].setdefault(key, [None] * len(samples))[i] = value

        for i, s in enumerate(samples):
            x.append(int(s.at))
            prev = samples[i - 1] if i else None
            dt = (s.at - prev.at) if prev else 0
            if prev and dt > 0:
                for group, name, labels in (("stage_rate", "chatstream_stage_records_total", ("stage",)),
                                            ("llm_rate", "chatstream_llm_calls_total", ("provider", "outcome"))):
                    now, before = by_label(s.values, name, *labels), by_label(prev.values, name, *labels)
                    for key, v in now.items():
                        put(group, key, i, max(0.0, v - before.get(key, 0.0)) / dt)
                total = by_label(s.values, "chatstream_retrieval_top_score_sum").get("", 0.0)
                count = by_label(s.values, "chatstream_retrieval_top_score_count").get("", 0.0)
                d_count = count - by_label(prev.values, "chatstream_retrieval_top_score_count").get("", 0.0)
                d_total = total - by_label(prev.values, "chatstream_retrieval_top_score_sum").get("", 0.0)
                put("retrieval_top_score", "mean", i, d_total / d_count if d_count > 0 else None)
            for key, v in by_label(s.values, "chatstream_llm_circuit_state", "provider").items():
                put("circuit", key, i, v)
            for key, v in by_label(s.values, "chatstream_inflight", "stage", "state").items():
                put("inflight", key, i, v)
            for key, v in s.lag.items():
                put("lag", key, i, v)
        last = samples[-1] if samples else None
        return {
            "x": x,
            **out,
            "error": last.error if last else "no sample yet",
            "circuit_now": by_label(last.values, "chatstream_llm_circuit_state", "provider") if last else {},
            "llm_totals": by_label(last.values, "chatstream_llm_calls_total", "provider", "outcome") if last else {},
            "retrieval_totals": {
                "sum": by_label(last.values, "chatstream_retrieval_top_score_sum").get("", 0.0) if last else 0.0,
                "count": by_label(last.values, "chatstream_retrieval_top_score_count").get("", 0.0) if last else 0.0,
            },
        }
