"""CPU time per process and for the whole machine, read from ``/proc``, over one benchmark window.

Why: throughput alone hides where the cores go. On a small machine the worker, Kafka, Weaviate,
Redis, Jaeger, the scripted LLM and the load generator all share the same cores, so the figure that
says whether a change helped is CPU milliseconds per turn, per process and for the machine.

``/proc/<pid>/stat`` fields 14 and 15 (utime, stime) count every thread of a process (the ONNX
thread, librdkafka's threads, the JVM's) in clock ticks; ``/proc/stat``'s first line is the whole
machine, busy = every field but idle, iowait and steal. Steal is time a virtual core was ready to run
but the hypervisor ran another guest: no work of this machine, so not in "machine"; it is reported on
its own, because a run with much of it is a noisy run (its latencies stretch, its CPU figures do not).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import NamedTuple

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds a live process has used so far (all its threads); None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5), 1-based
    return (utime + stime) / CLOCK_TICKS


class MachineCpu(NamedTuple):
    """CPU seconds of all cores since boot: ``busy`` (this machine's work), ``total`` (every field)
    and ``steal`` (taken by the hypervisor)."""

    busy: float
    total: float
    steal: float


def machine_cpu_s() -> MachineCpu:
    """The all-cores counters of ``/proc/stat``'s first line, in seconds."""
    with open("/proc/stat") as fh:
        first = fh.readline().split()
    assert first[0] == "cpu", "the first line of /proc/stat is the all-cores total"
    values = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    not_ours = values[3] + values[4] + values[7]
    total = sum(values)
    return MachineCpu((total - not_ours) / CLOCK_TICKS, total / CLOCK_TICKS, values[7] / CLOCK_TICKS)


@dataclass
class CpuWindow:
    """CPU used between ``start`` and ``stop``, by named process and by the machine."""

    elapsed_s: float
    process_s: dict[str, float]
    machine_busy_s: float
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    steal_s: float = 0.0

    @property
    def cores_busy(self) -> float:
        """Average number of cores the whole machine kept busy over the window."""
        return self.machine_busy_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def steal_share(self) -> float:
        """The share of the cores' time over the window that the hypervisor took."""
        return self.steal_s / (self.elapsed_s * self.cores) if self.elapsed_s > 0 else 0.0

    def per_turn_ms(self, turns: int) -> dict[str, float]:
        """CPU ms per turn for each process, plus ``machine``."""
        if turns <= 0:
            return {}
        out = {name: seconds * 1000 / turns for name, seconds in self.process_s.items()}
        out["machine"] = self.machine_busy_s * 1000 / turns
        return out

    def cores_of(self, name: str) -> float:
        return self.process_s.get(name, 0.0) / self.elapsed_s if self.elapsed_s > 0 else 0.0


class CpuMeter:
    """Samples named pids and the machine at ``start`` and ``stop``.

    Several pids may share a name (two workers are "worker"); their times add up. A process that
    exits inside the window counts what it used until its last sample (``sample`` may be called in
    between to keep that loss small).
    """

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = {name: [p for p in found if p] for name, found in pids.items()}
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._machine_first = MachineCpu(0.0, 0.0, 0.0)
        self._began = 0.0

    def start(self) -> "CpuMeter":
        self._first, self._last = {}, {}
        for pids in self.pids.values():
            for pid in pids:
                used = process_cpu_s(pid)
                if used is not None:
                    self._first[pid] = self._last[pid] = used
        self._machine_first = machine_cpu_s()
        self._began = time.monotonic()
        return self

    def sample(self) -> None:
        """Read every pid again (only the latest reading is kept)."""
        for pid in self._first:
            used = process_cpu_s(pid)
            if used is not None:
                self._last[pid] = used

    def stop(self) -> CpuWindow:
        self.sample()
        elapsed = time.monotonic() - self._began
        machine = machine_cpu_s()
        per_name = {
            name: sum(self._last[p] - self._first[p] for p in pids if p in self._first)
            for name, pids in self.pids.items()
            if any(p in self._first for p in pids)
        }
        return CpuWindow(elapsed, per_name, machine.busy - self._machine_first.busy,
                         steal_s=machine.steal - self._machine_first.steal)


def stack_pids(settings) -> dict[str, list[int]]:  # type: ignore[no-untyped-def]
    """Pids of the local stack's servers (Kafka, Redis, Weaviate, Jaeger) from their pid files.

    A service that is not ours (docker compose, a remote cluster) has no pid file and is left out:
    its CPU then shows only in the machine's figure.
    """
    from stack.manager import SERVICE_TYPES

    found: dict[str, list[int]] = {}
    for cls in SERVICE_TYPES:
        pid = cls(settings).pid()
        if pid is not None:
            found[cls.name] = [pid]
    return found
