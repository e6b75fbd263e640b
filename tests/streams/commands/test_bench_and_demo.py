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
    # the run's namespace is deleted with it (leftover bench topics filled the broker's heap)
    run_id = re.search(r"^bench (\w+):", out, re.M).group(1)  # type: ignore[union-attr]
    assert re.search(rf"deleted the run's [1-9]\d* topics \(bench-{run_id}\.\*\)", out), out
    assert re.search(r"deleted the run's [1-9]\d* Redis keys", out), out
    from streams.config import Settings
    from streams.topics import admin

    assert not [t for t in admin(Settings()).list_topics(timeout=10).topics if t.startswith(f"bench-{run_id}.")]
    import redis

    kv = redis.Redis.from_url(Settings().redis_connection_url)
    assert not list(kv.scan_iter(match=f"cs:bench-{run_id}.*")), "the run's sessions and reply markers went too"
    kv.close()


def test_worker_stages_names_are_checked_against_the_pipeline_table() -> None:
    from streams.commands.bench_cmd import _stage_group

    assert _stage_group("enrich, retrieve,validate") == ["enrich", "retrieve", "validate"]
    for bad in ("", "enrich,answer"):
        with pytest.raises(SystemExit, match="stages are enrich, retrieve, generate, validate"):
            _stage_group(bad)


@pytest.mark.stack
def test_bench_with_the_stages_split_over_two_workers_answers_every_turn(capsys) -> None:
    assert main(["bench", "--turns", "30", "--sessions", "6", "--llm-latency-ms", "20",
                 "--worker-stages", "enrich,retrieve,validate", "--worker-stages", "generate"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"turns 30\s+replies 30\s+duplicates 0\s+sessions out of order 0", out), out
    pids = re.search(r"worker pids (\d+) (\d+)", out)
    assert pids and pids.group(1) != pids.group(2), out


@pytest.mark.stack
def test_bench_profile_says_where_the_workers_python_time_goes(capsys) -> None:
    assert main(["bench", "--turns", "60", "--sessions", "6", "--llm-latency-ms", "0", "--profile"]) == 0
    out = capsys.readouterr().out
    line = re.search(r"worker GIL time by library \((\d+) samples\): (.*)", out)
    assert line and int(line.group(1)) > 0, out
    shares = dict(re.findall(r"([\w() .-]+?) (\d+) %", line.group(2)))
    assert "chatstream (our code)" in {k.strip(", ") for k in shares}, line.group(2)
    assert "our code by module: streams/" in out or "our code by module: processors/" in out, out


@pytest.mark.stack
def test_demo_plays_the_conversations_with_grounded_answers(capsys, monkeypatch) -> None:
    import os
    import signal

    from stack.ports import free_port

    console_port = free_port()
    monkeypatch.setenv("CHATSTREAM_CONSOLE_PORT", str(console_port))
    monkeypatch.setenv("CHATSTREAM_CONSOLE_TOKEN", "demo-test-token")
    assert main(["demo", "--no-stack", "--llm-latency-ms", "0"]) == 0
    out = capsys.readouterr().out
    console = re.search(r"== console (http://\S+) \(pid (\d+)\)", out)
    assert console, out
    os.kill(int(console.group(2)), signal.SIGTERM)  # the demo leaves it running for the newcomer
    assert console.group(1) == f"http://127.0.0.1:{console_port}/#token=demo-test-token"
    answers = re.findall(r"\[(ANSWERED|FALLBACK|ESCALATED|BLOCKED)\]", out)
    assert len(answers) == 8, out
    assert answers.count("ANSWERED") >= 5, out
    assert "help.northwindcloud.example/articles/reset-password" in out, "answers cite their sources"
    assert "[ESCALATED]" in out, "asking for a human escalates"


@pytest.mark.stack
def test_bench_json_has_cpu_per_process_and_the_baseline_ratio(capsys) -> None:
    import json

    assert main(["bench", "--turns", "30", "--sessions", "6", "--llm-latency-ms", "0", "--baseline", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    pipeline, baseline = figures["pipeline"], figures["baseline"]
    assert pipeline["replies"] == 30 and pipeline["duplicates"] == 0 and pipeline["out_of_order_sessions"] == 0
    cpu = pipeline["cpu"]["cpu_ms_per_turn"]
    for process in ("worker", "kafka", "redis", "weaviate", "jaeger", "llm", "bench", "machine"):
        assert cpu[process] >= 0, cpu
    assert cpu["worker"] > 0 and cpu["machine"] >= cpu["worker"], "the worker did work, and the machine ran it"
    assert 0 < pipeline["cpu"]["cores_busy"] <= pipeline["cpu"]["cores"] * 1.05  # two clocks read a moment apart
    # the baseline answered the same number of turns through the same processors, each with a status
    assert baseline["replies"] == 30 and baseline["out_of_order_sessions"] == 0
    assert sum(v for k, v in baseline["statuses"].items() if ":" not in k) == 30
    assert {k for k in baseline["statuses"] if ":" not in k} <= {"ANSWERED", "FALLBACK", "ESCALATED", "BLOCKED"}, baseline["statuses"]
    assert "worker" not in baseline["cpu"]["cpu_ms_per_turn"] and baseline["cpu"]["cpu_ms_per_turn"]["bench"] > 0
    ratios = figures["pipeline_over_baseline"]
    assert ratios["throughput"] == pytest.approx(pipeline["throughput"] / baseline["throughput"], rel=0.01)
    assert ratios["machine_cpu_per_turn"] > 0
