"""`chatstream bench` and `chatstream demo` drive the real pipeline and report what they saw."""

from __future__ import annotations

import re

import httpx
import pytest

from streams.cli import main
from streams.commands.bench_cmd import percentile
from streams.dev.llm_process import LLMServerProcess


def test_percentile_picks_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 51.0  # index round(0.5 * 99) = 50
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0


def test_llm_server_process_serves_and_stops() -> None:
    with LLMServerProcess(latency_ms=0) as llm:
        assert httpx.get(f"{llm.base_url}/models", timeout=5).status_code == 200
        proc = llm.proc
    assert proc is not None and proc.poll() is not None, "stopped with the context"


@pytest.mark.stack
def test_bench_prints_every_figure_and_counts_every_reply(capsys) -> None:
    assert main(["bench", "--turns", "40", "--sessions", "8", "--llm-latency-ms", "50", "--llm-token-ms", "5",
                 "--llm-tokens", "10"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"turns 40\s+replies 40\s+duplicates 0\s+sessions out of order 0", out), out
    # a cold worker may answer its first turn without a lookup (retrieval still loading): nothing streams
    streamed = re.search(r"time to first token ms p50 \d+  p95 \d+  p99 \d+   \((\d+) turns streamed", out)
    assert streamed and int(streamed.group(1)) >= 30, out
    for figure in ("throughput", "end-to-end latency ms  p50", "pipeline overhead ms", "enrich", "validate", "worker peak RSS"):
        assert figure in out, out


@pytest.mark.stack
def test_demo_plays_the_conversations_with_grounded_answers(capsys) -> None:
    assert main(["demo", "--no-stack", "--llm-latency-ms", "0"]) == 0
    out = capsys.readouterr().out
    answers = re.findall(r"\[(ANSWERED|FALLBACK|ESCALATED|BLOCKED)\]", out)
    assert len(answers) == 8, out
    assert answers.count("ANSWERED") >= 5, out
    assert "help.northwindcloud.example/articles/reset-password" in out, "answers cite their sources"
    assert "[ESCALATED]" in out, "asking for a human escalates"
