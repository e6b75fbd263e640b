"""CPU sampling from /proc: a known busy child process shows up as busy, an idle one as idle."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from streams.bench.cpu import CpuMeter, CpuWindow, machine_cpu_s, process_cpu_s
from streams.bench.figures import cpu_json, cpu_lines

# waits for a line on stdin, burns the CPU seconds, says so, then idles until stdin closes
BUSY = (
    "import sys, time\nprint('ready', flush=True)\nsys.stdin.readline()\nend = time.process_time() + {seconds}\n"
    "while time.process_time() < end: pass\nprint('done', flush=True)\nsys.stdin.read()\n"
)


def _child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_a_busy_child_is_measured_near_the_cpu_it_burnt() -> None:
    busy = _child(BUSY.format(seconds=0.6))
    idle = _child("import sys; print('ready', flush=True); sys.stdin.read()")
    try:
        # both past their interpreter start-up (tens of ms of CPU on a busy machine) before the window opens
        assert busy.stdout.readline().strip() == "ready" and idle.stdout.readline().strip() == "ready"
        meter = CpuMeter({"busy": [busy.pid], "idle": [idle.pid], "gone": [999_999_999]}).start()
        busy.stdin.write("go\n")
        busy.stdin.flush()
        assert busy.stdout.readline().strip() == "done"
        window = meter.stop()  # while it still lives: a reaped process has no /proc entry
    finally:
        for child in (busy, idle):
            child.stdin.close()
            child.wait(10)
    assert 0.55 <= window.process_s["busy"] <= 0.7, window
    assert window.process_s["idle"] < 0.05, window
    assert "gone" not in window.process_s, "a pid that never existed is left out, not counted as 0"
    assert window.machine_busy_s >= window.process_s["busy"] * 0.9, "the machine ran at least the busy child"
    per_turn = window.per_turn_ms(100)
    assert per_turn["busy"] == pytest.approx(window.process_s["busy"] * 10)
    assert per_turn["machine"] == pytest.approx(window.machine_busy_s * 10)


def test_process_and_machine_counters_only_grow() -> None:
    import os

    mine = process_cpu_s(os.getpid())
    before = machine_cpu_s()
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert process_cpu_s(os.getpid()) > mine
    after = machine_cpu_s()
    assert after.busy >= before.busy and after.total > before.total and after.steal >= before.steal
    assert after.busy + after.steal <= after.total
    assert process_cpu_s(999_999_999) is None


def test_cores_busy_and_the_printed_and_json_figures() -> None:
    window = CpuWindow(elapsed_s=10.0, process_s={"worker": 8.0, "kafka": 2.0, "bench": 1.0}, machine_busy_s=15.0, cores=2,
                       steal_s=1.0)
    assert window.cores_busy == pytest.approx(1.5)
    assert window.steal_share == pytest.approx(0.05)
    assert window.cores_of("worker") == pytest.approx(0.8)
    text = "\n".join(cpu_lines(window, 1000))
    assert "CPU ms per turn: worker 8.0  kafka 2.0  bench 1.0  machine 15.0" in text
    assert "cores busy 1.50 of 2" in text and "host steal 5.0% of the cores' time" in text
    figures = cpu_json(window, 1000)
    assert figures is not None
    assert figures["cpu_ms_per_turn"] == {"worker": 8.0, "kafka": 2.0, "bench": 1.0, "machine": 15.0}
    assert figures["cores_busy"] == 1.5 and figures["cpu_s"]["machine"] == 15.0 and figures["steal_share"] == 0.05
    assert list(figures["cpu_ms_per_turn"])[-1] == "machine"
