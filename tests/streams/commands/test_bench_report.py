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


def test_each_run_asks_its_own_questions_so_no_run_reads_anothers_cached_vectors() -> None:
    from processors.condense import searchable_text
    from processors.kb_cache import normalise_query
    from streams.commands.bench_cmd import bench_requests

    def queries(requests) -> set[str]:
        return {normalise_query(searchable_text(r.text), uncased=True) for r in requests}

    _, first = bench_requests(50, 5)
    _, second = bench_requests(50, 5)
    assert len(queries(first)) == 50  # every turn its own question
    assert not queries(first) & queries(second)  # what the query-vector cache is keyed by differs between runs
    _, again = bench_requests(50, 5, tag="12345")
    assert [r.text for r in again] == [r.text for r in bench_requests(50, 5, tag="12345")[1]]
