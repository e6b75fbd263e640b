"""The bench report's per-stage lines come from the pipeline table (no services)."""

from __future__ import annotations

from streams.commands.bench_cmd import BenchResult, report
from streams.pipeline import TIMING_KEYS


def test_per_stage_lines_follow_the_pipeline_table() -> None:
    stage_ms = {key: [i + 1, i + 2] for i, key in enumerate(reversed(TIMING_KEYS))}
    result = BenchResult(turns=2, replies=2, duplicates=0, out_of_order_sessions=0, elapsed_s=1.0,
                         latencies_ms=[10.0, 20.0], overhead_ms=[5.0, 6.0], stage_ms=stage_ms, peak_rss_mb=100.0)
    lines = report(result, 0, 64).splitlines()
    first = lines.index("per-stage processing ms (p50 / p99):") + 1
    shown = [line.split()[0] for line in lines[first:first + len(TIMING_KEYS)]]
    assert shown == list(TIMING_KEYS)  # every stage and the LLM part, in pipeline order
