"""Figures of one run: latency, tokens, cost, status mix, validation, retrieval, labels, feedback.

Everything here is plain functions over ``TurnRecord`` lists (``streams.evaluation.run``), so the
figures are unit-tested on hand-built runs and the same code serves ``eval`` and ``eval compare``.
Definitions (also in the issue-10 note):

- latency: ``created_at`` of the reply minus the moment the turn was offered (``sent_at``, or for a
  replay the ``replay_published_at`` metadata, since a replay keeps the original ``sent_at``);
- cost: tokens x the model's price in ``Settings.model_prices`` (USD per million, [prompt, completion]);
- answered: status ANSWERED; declined: any other status (FALLBACK, ESCALATED, BLOCKED, ...);
- with labels, per answerable question: hit@k (a relevant doc among the k retrieved docs), reciprocal
  rank, context precision/recall over distinct retrieved doc ids, "right article cited" (ANSWERED
  and a citation among the relevant docs), token F1 and ROUGE-L of the reply against the reference;
  per unanswerable question: declined.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from processors.generation.text import content_words
from streams.pipeline import TIMING_KEYS

_CITATION = re.compile(r"\[[^\]\s]+\]")
_TOKEN = re.compile(r"[a-z0-9]+")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(_CITATION.sub(" ", text.lower()))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 (citations stripped, lower-cased)."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return 0.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: longest common subsequence of tokens."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return 0.0
    prev = [0] * (len(ref) + 1)
    for p in pred:
        cur = [0] * (len(ref) + 1)
        for j, r in enumerate(ref, 1):
            cur[j] = prev[j - 1] + 1 if p == r else max(prev[j], cur[j - 1])
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def normalize_question(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass
class TurnRecord:
    """One turn of a run, joined from its topics by message id."""

    message_id: str
    session_id: str
    question: str
    status: str | None = None  # None: no reply (yet)
    reason: str | None = None
    answer: str = ""
    cited: list[str] = field(default_factory=list)
    retrieved: list[str] = field(default_factory=list)  # distinct doc ids, rank order
    relevance: float | None = None  # best absolute relevance of the passages
    answerable_flag: bool = True
    model: str = ""
    provider: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None
    stage_ms: dict[str, int] = field(default_factory=dict)
    groundedness: float = 0.0
    llm_failed: bool = False
    failed_rules: list[str] = field(default_factory=list)
    escalated: bool = False
    feedback: list[tuple[str, int]] = field(default_factory=list)  # (kind, score)
    tenant: str = "default"
    channel: str = ""


def cost_usd(record: TurnRecord, prices: dict[str, list[float]]) -> float:
    price = prices.get(record.model) or [0.0, 0.0]
    return (record.prompt_tokens * price[0] + record.completion_tokens * price[1]) / 1_000_000


@dataclass
class LabelScore:
    """What the labels say about one turn (None where a measure does not apply)."""

    unanswerable: bool
    declined: bool
    answered_right: bool | None = None
    hit_at_1: float | None = None
    hit_at_k: float | None = None
    reciprocal_rank: float | None = None
    context_precision: float | None = None
    context_recall: float | None = None
    token_f1: float | None = None
    rouge_l: float | None = None


def score_label(record: TurnRecord, label) -> LabelScore:  # label: streams.replay.source.Label
    declined = record.status != "ANSWERED"
    if label.unanswerable:
        return LabelScore(unanswerable=True, declined=declined)
    relevant = set(label.relevant)
    retrieved = record.retrieved
    ranks = [i for i, doc in enumerate(retrieved, 1) if doc in relevant]
    found = relevant & set(retrieved)
    score = LabelScore(
        unanswerable=False,
        declined=declined,
        answered_right=(not declined) and bool(relevant & set(record.cited)),
        hit_at_1=float(bool(retrieved) and retrieved[0] in relevant),
        hit_at_k=float(bool(ranks)),
        reciprocal_rank=1.0 / ranks[0] if ranks else 0.0,
        context_precision=len([d for d in retrieved if d in relevant]) / len(retrieved) if retrieved else 0.0,
        context_recall=len(found) / len(relevant) if relevant else 0.0,
    )
    if label.reference:
        score.token_f1 = token_f1(record.answer, label.reference)
        score.rouge_l = rouge_l(record.answer, label.reference)
    return score


def match_labels(records: Iterable[TurnRecord], labels) -> dict[str, object]:  # -> message_id: Label
    """Labels joined by message id, else by the normalised question text."""
    by_id = {label.id: label for label in labels}
    by_text = {normalize_question(label.question): label for label in labels}
    out = {}
    for record in records:
        label = by_id.get(record.message_id) or by_text.get(normalize_question(record.question))
        if label is not None:
            out[record.message_id] = label
    return out


def _mean(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else float("nan")


def summarize(records: Sequence[TurnRecord], prices: dict[str, list[float]], labels: Sequence = ()) -> dict[str, object]:
    """The figures of one run as a flat dict (printed by ``eval``, compared by ``eval compare``)."""
    replied = [r for r in records if r.status is not None]
    latencies = [r.latency_ms for r in replied if r.latency_ms is not None]
    out: dict[str, object] = {
        "turns": len(records),
        "replied": len(replied),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p95_ms": percentile(latencies, 95),
        "latency_p99_ms": percentile(latencies, 99),
        "prompt_tokens_per_turn": _mean(r.prompt_tokens for r in replied),
        "completion_tokens_per_turn": _mean(r.completion_tokens for r in replied),
        "cost_usd_total": sum(cost_usd(r, prices) for r in replied),
        "cost_usd_per_1k_turns": 1000 * _mean(cost_usd(r, prices) for r in replied),
        "escalation_rate": _mean(float(r.status == "ESCALATED") for r in replied),
        "answered_rate": _mean(float(r.status == "ANSWERED") for r in replied),
        "llm_failed_calls": sum(r.llm_failed for r in replied),
        "groundedness_mean": _mean(r.groundedness for r in replied if r.status == "ANSWERED"),
    }
    seen = {s for r in replied for s in r.stage_ms}
    stages = [k for k in TIMING_KEYS if k in seen] + sorted(seen - set(TIMING_KEYS))  # pipeline order
    for stage in stages:
        values = [float(r.stage_ms[stage]) for r in replied if stage in r.stage_ms]
        for q in (50, 95, 99):
            out[f"stage_{stage}_p{q}_ms"] = percentile(values, q)
    relevances = [r.relevance for r in replied if r.relevance is not None]
    for q in (5, 25, 50, 75, 95):
        out[f"relevance_p{q}"] = percentile(relevances, q)
    out["status_mix"] = dict(Counter(r.status for r in replied).most_common())
    out["validation_failures"] = dict(Counter(rule for r in replied for rule in r.failed_rules).most_common())
    kinds = Counter(kind for r in replied for kind, _ in r.feedback)
    csat = [score for r in replied for kind, score in r.feedback if kind == "CSAT"]
    out["feedback"] = {**dict(kinds), "csat_mean": statistics.fmean(csat) if csat else None}
    if labels:
        matched = match_labels(replied, labels)
        scores = [score_label(r, matched[r.message_id]) for r in replied if r.message_id in matched]
        answerable = [s for s in scores if not s.unanswerable]
        unanswerable = [s for s in scores if s.unanswerable]
        out.update(
            {
                "labelled_turns": len(scores),
                "labelled_answerable": len(answerable),
                "labelled_unanswerable": len(unanswerable),
                "answered_right_rate": _mean(float(s.answered_right) for s in answerable),
                "answerable_answered_rate": _mean(float(not s.declined) for s in answerable),
                "unanswerable_declined_rate": _mean(float(s.declined) for s in unanswerable),
                "hit_at_1": _mean(s.hit_at_1 for s in answerable),
                "hit_at_k": _mean(s.hit_at_k for s in answerable),
                "mrr": _mean(s.reciprocal_rank for s in answerable),
                "context_precision": _mean(s.context_precision for s in answerable),
                "context_recall": _mean(s.context_recall for s in answerable),
                "answer_token_f1": _mean(s.token_f1 for s in answerable),
                "answer_rouge_l": _mean(s.rouge_l for s in answerable),
            }
        )
        out.update(_by_part(replied, matched))
    return out


def _by_part(replied, matched) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The goal's two rates on the fit and held-out parts of the labels (``streams.evaluation.split``),
    and the answerable questions not answered right (the misses to look at)."""
    from streams.evaluation.split import PARTS, part_of

    out: dict[str, object] = {}
    scored = [(r, matched[r.message_id], score_label(r, matched[r.message_id])) for r in replied if r.message_id in matched]
    for part in PARTS:
        mine = [(label, s) for _, label, s in scored if part_of(label) == part]
        answerable = [s for _, s in mine if not s.unanswerable]
        unanswerable = [s for _, s in mine if s.unanswerable]
        key = part.replace("-", "_")
        out[f"{key}_answerable"] = len(answerable)
        out[f"{key}_unanswerable"] = len(unanswerable)
        out[f"{key}_answered_right_rate"] = _mean(float(s.answered_right) for s in answerable)
        out[f"{key}_unanswerable_declined_rate"] = _mean(float(s.declined) for s in unanswerable)
    out["answerable_missed"] = " ".join(sorted(label.id for _, label, s in scored if not s.unanswerable and not s.answered_right))
    out["unanswerable_answered"] = " ".join(sorted(label.id for _, label, s in scored if s.unanswerable and not s.declined))
    return out


def per_turn_values(record: TurnRecord, prices: dict[str, list[float]], label=None) -> dict[str, float | None]:
    """The per-turn measures compared pairwise by ``eval compare``."""
    values: dict[str, float | None] = {
        "latency_ms": record.latency_ms,
        "prompt_tokens": float(record.prompt_tokens),
        "completion_tokens": float(record.completion_tokens),
        "cost_usd": cost_usd(record, prices),
        "answered": float(record.status == "ANSWERED"),
        "groundedness": record.groundedness if record.status == "ANSWERED" else None,
    }
    if label is not None:
        score = score_label(record, label)
        if score.unanswerable:
            values["declined_unanswerable"] = float(score.declined)
        else:
            values.update(
                answered_right=float(bool(score.answered_right)),
                hit_at_k=score.hit_at_k,
                reciprocal_rank=score.reciprocal_rank,
                context_precision=score.context_precision,
                context_recall=score.context_recall,
                token_f1=score.token_f1,
                rouge_l=score.rouge_l,
            )
    return values


# direction of each per-turn measure: +1 higher is better, -1 lower is better
DIRECTION = {
    "latency_ms": -1, "prompt_tokens": -1, "completion_tokens": -1, "cost_usd": -1, "answered": +1,
    "groundedness": +1, "declined_unanswerable": +1, "answered_right": +1, "hit_at_k": +1,
    "reciprocal_rank": +1, "context_precision": +1, "context_recall": +1, "token_f1": +1, "rouge_l": +1,
}


def question_cluster(record: TurnRecord, label=None) -> str:
    """The intent a question belongs to: its labelled article, else the top retrieved article."""
    if label is not None:
        return "(not covered)" if label.unanswerable else label.relevant[0]
    return record.retrieved[0] if record.retrieved and record.answerable_flag else "(not covered)"


def content_overlap(a: str, b: str) -> float:
    """Jaccard overlap of content words; 1 - this = how much an answer changed."""
    wa, wb = set(content_words(a)), set(content_words(b))
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)
