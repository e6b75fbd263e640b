"""Two runs, paired per message id: differences with a paired bootstrap CI, and the dashboard questions.

A paired comparison removes the question-to-question variance that dwarfs most effects (one hard
question is slow and wrong in both runs), so small real differences show. For each per-turn measure
the mean of (B - A) over the pairs where both have a value is resampled with replacement
(``resamples`` times, fixed seed): the 2.5 and 97.5 percentiles are the 95 % CI. The verdict says
"B better" / "B worse" when the CI excludes 0 (direction from ``metrics.DIRECTION``), else "no
significant difference".
"""

from __future__ import annotations

import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from streams.evaluation.metrics import (
    DIRECTION,
    TurnRecord,
    content_overlap,
    match_labels,
    per_turn_values,
    percentile,
    question_cluster,
)
from streams.pipeline import STAGES, TIMING_PARTS


@dataclass
class MetricComparison:
    name: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    verdict: str

    @property
    def relative(self) -> float | None:
        return self.diff / self.mean_a if self.mean_a else None


@dataclass
class Comparison:
    name_a: str
    name_b: str
    pairs: list[tuple[TurnRecord, TurnRecord]]
    metrics: list[MetricComparison]
    wins: Counter = field(default_factory=Counter)  # per-question outcome on answer quality
    changed: list[tuple[float, TurnRecord, TurnRecord]] = field(default_factory=list)
    clusters: list[tuple[str, int, float, float]] = field(default_factory=list)  # cluster, n, fail A, fail B
    stages: list[tuple[str, float, float, float, float]] = field(default_factory=list)  # stage, p50 A, p95 A, p50 B, p95 B
    sources: list[tuple[str, int, float, int, int]] = field(default_factory=list)  # doc, cited, groundedness, thumbs down, wrong
    only_a: int = 0
    only_b: int = 0


def bootstrap_ci(diffs: Sequence[float], resamples: int = 2000, seed: int = 7) -> tuple[float, float]:
    if not diffs:
        return float("nan"), float("nan")
    if len(diffs) == 1:
        return diffs[0], diffs[0]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[min(resamples - 1, int(0.975 * resamples))]


def verdict(name: str, low: float, high: float) -> str:
    direction = DIRECTION.get(name, +1)
    if low > 0:
        return "B better" if direction > 0 else "B worse"
    if high < 0:
        return "B worse" if direction > 0 else "B better"
    return "no significant difference"


def pair(a: Sequence[TurnRecord], b: Sequence[TurnRecord]) -> list[tuple[TurnRecord, TurnRecord]]:
    by_id = {r.message_id: r for r in b if r.status is not None}
    return [(ra, by_id[ra.message_id]) for ra in a if ra.status is not None and ra.message_id in by_id]


def _quality(values: dict[str, float | None]) -> float | None:
    if "declined_unanswerable" in values:
        return values["declined_unanswerable"]
    if "answered_right" in values:
        return (values["answered_right"] or 0.0) + 0.5 * (values.get("token_f1") or 0.0)
    return None


def compare(
    a: Sequence[TurnRecord], b: Sequence[TurnRecord], prices: dict[str, list[float]], labels: Sequence = (),
    *, name_a: str = "A", name_b: str = "B", resamples: int = 2000,
) -> Comparison:
    pairs = pair(a, b)
    matched = match_labels([ra for ra, _ in pairs], labels) if labels else {}
    per_a = [per_turn_values(ra, prices, matched.get(ra.message_id)) for ra, _ in pairs]
    per_b = [per_turn_values(rb, prices, matched.get(ra.message_id)) for ra, rb in pairs]
    names = [n for n in DIRECTION if any(n in v for v in per_a)]
    metrics = []
    for name in names:
        both = [(va[name], vb[name]) for va, vb in zip(per_a, per_b) if va.get(name) is not None and vb.get(name) is not None]
        if not both:
            continue
        diffs = [y - x for x, y in both]
        low, high = bootstrap_ci(diffs, resamples)
        metrics.append(
            MetricComparison(
                name, len(both), statistics.fmean(x for x, _ in both), statistics.fmean(y for _, y in both),
                statistics.fmean(diffs), low, high, verdict(name, low, high),
            )
        )
    out = Comparison(name_a, name_b, pairs, metrics)
    out.only_a = len({r.message_id for r in a if r.status}) - len(pairs)
    out.only_b = len({r.message_id for r in b if r.status}) - len(pairs)
    for va, vb in zip(per_a, per_b):
        qa, qb = _quality(va), _quality(vb)
        if qa is None or qb is None:
            out.wins["unlabelled"] += 1
        else:
            out.wins["B wins" if qb > qa else "A wins" if qa > qb else "tie"] += 1
    out.changed = sorted(
        ((1 - content_overlap(ra.answer, rb.answer), ra, rb) for ra, rb in pairs if ra.answer != rb.answer),
        key=lambda x: -x[0],
    )[:10]
    out.clusters = failing_clusters(pairs, matched)
    out.stages = stage_delays(pairs)
    out.sources = source_quality([rb for _, rb in pairs], matched)
    return out


def _failed(record: TurnRecord, label) -> bool:
    if label is not None and label.unanswerable:
        return record.status == "ANSWERED"
    if label is not None:
        return not (record.status == "ANSWERED" and set(label.relevant) & set(record.cited))
    return record.status != "ANSWERED"


def failing_clusters(pairs, matched) -> list[tuple[str, int, float, float]]:  # type: ignore[no-untyped-def]
    """Question clusters (intent = article) by failure rate in B: which prompts fail most often."""
    groups: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for ra, rb in pairs:
        label = matched.get(ra.message_id)
        groups[question_cluster(ra, label)].append((_failed(ra, label), _failed(rb, label)))
    rows = [(name, len(v), sum(x for x, _ in v) / len(v), sum(y for _, y in v) / len(v)) for name, v in groups.items()]
    return sorted(rows, key=lambda r: (-r[3] * r[1], -r[1]))[:10]


def stage_delays(pairs) -> list[tuple[str, float, float, float, float]]:  # type: ignore[no-untyped-def]
    """Per integration (the keys of the replies' ``stage_ms``) p50/p95, A and B, the worst first.

    A stage measured in parts (generate: its LLM call) is shown by its part, the integration.
    ``kafka+queue`` is end-to-end minus the stages' processing: hops, consumer waits, in-flight queues.
    """
    rows = []
    measured_in_parts = {s.name for s in STAGES if s.parts}
    stages = sorted({s for ra, rb in pairs for s in (*ra.stage_ms, *rb.stage_ms)} - measured_in_parts)
    for stage in [*stages, "kafka+queue"]:
        cols = []
        for side in (0, 1):
            values = []
            for p in pairs:
                r = p[side]
                if stage == "kafka+queue":
                    if r.latency_ms is not None and r.stage_ms:
                        busy = sum(v for k, v in r.stage_ms.items() if k not in TIMING_PARTS)
                        values.append(max(0.0, r.latency_ms - busy))
                elif stage in r.stage_ms:
                    values.append(float(r.stage_ms[stage]))
            cols += [percentile(values, 50), percentile(values, 95)]
        rows.append((stage, *cols))
    return sorted(rows, key=lambda r: -(r[4] if r[4] == r[4] else 0))


def source_quality(records: Sequence[TurnRecord], matched) -> list[tuple[str, int, float, int, int]]:  # type: ignore[no-untyped-def]
    """Knowledge sources by how they serve answers: times cited, mean groundedness of those answers,
    thumbs-down on them, and (with labels) citations of it where it was not a relevant article."""
    cited: dict[str, list[TurnRecord]] = defaultdict(list)
    for r in records:
        for doc in set(r.cited):
            cited[doc].append(r)
    rows = []
    for doc, rs in cited.items():
        down = sum(1 for r in rs for kind, _ in r.feedback if kind == "THUMBS_DOWN")
        wrong = sum(1 for r in rs if (lab := matched.get(r.message_id)) is not None and doc not in lab.relevant)
        rows.append((doc, len(rs), statistics.fmean(r.groundedness for r in rs), down, wrong))
    # the worst first: wrong citations and thumbs down, then low groundedness among often-cited
    return sorted(rows, key=lambda r: (-(r[4] + r[3]), r[2]))[:10]
