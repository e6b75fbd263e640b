"""The CPU and baseline lines of ``chatstream bench``, as text and as JSON-ready dicts."""

from __future__ import annotations

from typing import Any

from streams.bench.cpu import CpuWindow

# print order; anything else measured comes after these
PROCESS_ORDER = ("worker", "kafka", "weaviate", "redis", "jaeger", "llm", "bench")


def _ordered(per_turn: dict[str, float]) -> list[tuple[str, float]]:
    names = [n for n in PROCESS_ORDER if n in per_turn] + sorted(
        n for n in per_turn if n not in PROCESS_ORDER and n != "machine"
    )
    return [(n, per_turn[n]) for n in names] + [("machine", per_turn.get("machine", 0.0))]


def cpu_lines(window: CpuWindow, turns: int, label: str = "") -> list[str]:
    per_turn = window.per_turn_ms(turns)
    parts = "  ".join(f"{name} {ms:.1f}" for name, ms in _ordered(per_turn))
    return [
        f"CPU ms per turn{label}: {parts}",
        f"  cores busy {window.cores_busy:.2f} of {window.cores} over {window.elapsed_s:.1f} s "
        f"({', '.join(f'{n} {window.cores_of(n):.2f}' for n, _ in _ordered(per_turn) if n != 'machine')}); "
        f"host steal {window.steal_share:.1%} of the cores' time",
    ]


def cpu_json(window: CpuWindow | None, turns: int) -> dict[str, Any] | None:
    if window is None:
        return None
    return {
        "window_s": round(window.elapsed_s, 3),
        "cores": window.cores,
        "cores_busy": round(window.cores_busy, 3),
        "steal_share": round(window.steal_share, 4),
        "cpu_ms_per_turn": {name: round(ms, 3) for name, ms in _ordered(window.per_turn_ms(turns))},
        "cpu_s": {name: round(s, 3) for name, s in window.process_s.items()} | {"machine": round(window.machine_busy_s, 3)},
    }


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def count_statuses(replies: list) -> dict[str, int]:
    """Replies by status, plus "STATUS: reason" for the others: a FALLBACK run is cheaper, not faster."""
    counts: dict[str, int] = {}
    for reply in replies:
        status = getattr(reply.status, "value", reply.status)
        counts[status] = counts.get(status, 0) + 1
        if status != "ANSWERED":
            key = f"{status}: {(reply.reason or '')[:40]}"
            counts[key] = counts.get(key, 0) + 1
    return counts
