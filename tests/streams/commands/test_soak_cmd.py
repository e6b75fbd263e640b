"""`chatstream soak`: bounded, reports per minute, ends with lost/doubled counts (CI's short share of it)."""

from __future__ import annotations

import re

import pytest

from streams.cli import main
from streams.commands.soak_cmd import Minute, drift


def test_drift_compares_the_first_and_last_minutes() -> None:
    minutes = [Minute(i, sent=60, replies=60 * (i + 1), latencies_ms=[100.0 * (i + 1)], rss_mb=300 + i, redis_mb=2.0)
               for i in range(4)]
    line = drift(minutes)
    assert line.startswith("drift (first 2 vs last 2 minutes)")
    assert "replies 1.5/s -> 3.5/s" in line and "p99 150.0 ms -> 350.0 ms" in line
    assert "worker RSS 300.5 MiB -> 302.5 MiB" in line


@pytest.mark.stack
@pytest.mark.timeout(420)
def test_one_minute_with_a_worker_kill_and_an_llm_burst(capsys) -> None:
    # only faults of its own processes: the shared stack's Redis and brokers are left alone
    code = main(["soak", "--minutes", "1", "--rate", "3", "--sessions", "10", "--fault-every", "0.4",
                 "--faults", "worker,llm", "--drain", "150"])
    out = capsys.readouterr().out
    print(out)
    assert "fault: worker kill -9" in out and "fault: LLM 503 for 10 s" in out
    assert "  min   1  sent    180" in out
    assert "turns 180  lost 0  doubled 0  sessions out of order 0" in out
    # the run's namespace goes with it, topics and Redis keys (10 sessions, 180 reply markers and claims)
    assert re.search(r"deleted the run's [1-9]\d* topics \(soak-\w+\.\*\)", out), out
    assert re.search(r"deleted the run's [1-9]\d{2,} Redis keys", out), out
    assert code == 0
