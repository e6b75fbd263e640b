"""Choose the answerability threshold on the labelled set: the retriever alone, no Kafka.

Each labelled question (follow-ups with their conversation's earlier questions as history, as the
session stage would give them) is retrieved with the configured retriever; its ``answer_score`` is
recorded, and for every candidate threshold the share of unanswerable questions declined and of
answerable ones kept (with a relevant article among the passages) is printed. The issue's goal is
>= 90 % declined with >= 95 % kept.

The threshold is fitted on the labels' ``fit`` part only (``streams.evaluation.split``); the table
shows the held-out part beside it, which is the honest estimate for traffic the threshold never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

from processors.records import ChatRequest, ChatTurn, HistoryTurn
from processors.relevance import turn_score
from processors.retrieval import build_query, latest_text, build_retriever
from streams.config import Settings
from streams.evaluation.split import FIT, HELD_OUT, part_of


@dataclass
class Point:
    label_id: str
    unanswerable: bool
    score: float
    relevant_found: bool
    part: str = FIT


async def calibrate(settings: Settings, labels) -> list[Point]:  # type: ignore[no-untyped-def]
    from processors.embeddings import build_embedder
    from processors.vectorstore import build_store

    store, embedder = build_store(settings), build_embedder(settings)
    retriever = build_retriever(settings.derive(answerability_min_relevance=1e-9), store, embedder)  # measures, never declines
    history: dict[str, list[HistoryTurn]] = {}
    points = []
    try:
        warm_up = getattr(embedder, "warm_up", None)
        if warm_up is not None:
            await warm_up()  # the first lookup must not time out while the model loads
        for label in labels:
            past = history.setdefault(label.session or label.id, [])
            turn = ChatTurn(ChatRequest(label.id, "calibrate", "calibrate", "web", label.question, 0, tenant=settings.tenant), history=list(past))
            past.append(HistoryTurn("user", label.question, label.id))
            turn = await retriever.retrieve(turn)
            if not turn.retrieval_ok:
                raise RuntimeError(f"retrieval failed: {turn.retrieval_error}")
            score = turn_score(build_query(turn), latest_text(turn), turn.passages)
            found = bool(set(label.relevant) & {p.doc_id for p in turn.passages})
            points.append(Point(label.id, label.unanswerable, score if score is not None else 0.0, found, part_of(label)))
    finally:
        await store.close()
        await embedder.close()
    return points


def rates(points: list[Point], threshold: float) -> tuple[float, float]:
    """(share of unanswerable declined, share of answerable kept) at ``threshold``."""
    un = [p for p in points if p.unanswerable]
    an = [p for p in points if not p.unanswerable]
    declined = sum(p.score < threshold for p in un) / len(un) if un else float("nan")
    kept = sum(p.score >= threshold for p in an) / len(an) if an else float("nan")
    return declined, kept


def fitted_threshold(points: list[Point]) -> float:
    """The candidate threshold with the best balance of the goal's two rates on the ``fit`` points
    (the largest of min(declined / 0.90, kept / 0.95); ties go to the lower threshold)."""
    fit = [p for p in points if p.part == FIT] or points
    return max(CANDIDATES, key=lambda t: (min(rates(fit, t)[0] / 0.9, rates(fit, t)[1] / 0.95), -t))


CANDIDATES = [round(x / 100, 2) for x in range(70, 131, 2)]


def table(points: list[Point], current: float) -> str:
    an = [p for p in points if not p.unanswerable]
    found = sum(p.relevant_found for p in an) / len(an) if an else float("nan")
    fit = [p for p in points if p.part == FIT]
    held = [p for p in points if p.part == HELD_OUT]
    lines = [
        f"{len(an)} answerable ({100 * found:.0f}% with a relevant article among the passages), "
        f"{len(points) - len(an)} unanswerable; fitted on {len(fit)} ({FIT}), {len(held)} {HELD_OUT}",
        "threshold  declined fit / held-out / all    kept fit / held-out / all",
    ]
    best = fitted_threshold(points)
    for t in sorted(set(CANDIDATES) | {round(current, 2)}):
        (df, kf), (dh, kh), (da, ka) = rates(fit, t), rates(held, t), rates(points, t)
        mark = " <- configured" if abs(t - current) < 1e-9 else ""
        mark += f" <- fitted on {FIT}" if t == best else ""
        lines.append(
            f"  {t:5.2f}     {100 * df:5.1f} / {100 * dh:5.1f} / {100 * da:5.1f} %   "
            f"{100 * kf:5.1f} / {100 * kh:5.1f} / {100 * ka:5.1f} %{mark}"
        )
    return "\n".join(lines)
