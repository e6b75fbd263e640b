"""The console's store: what the tail writes comes back as series and top-N lists (SQLite, no services)."""

from __future__ import annotations

import time

from streams.console.store import TurnStore, question_key
from streams.console.synthetic import fill


def _now() -> int:
    return int(time.time() * 1000)


def _turn(store: TurnStore, mid: str, question: str, status: str, at: int, *, llm: int = 300, docs=(), g: float = 0.9):
    store.write([
        ("request", {"message_id": mid, "session_id": f"s-{mid}", "trace_id": f"{mid:0>32}", "channel": "web",
                     "tenant": "t", "question": question, "intent": "", "sent_at": at, "seen_at": at}),
        ("reply", {"message_id": mid, "session_id": f"s-{mid}", "trace_id": None, "channel": "web", "tenant": "t",
                   "status": status, "reason": None, "created_at": at + 400, "latency_ms": llm + 40,
                   "stage_ms": {"enrich": 3, "retrieve": 20, "generate": llm + 2, "llm": llm, "validate": 1},
                   "model": "m", "prompt_tokens": 100, "completion_tokens": 50, "groundedness": g,
                   "citations": [{"doc_id": d, "title": d.title(), "score": 0.8} for d in docs]}),
    ])


def test_question_key_clusters_case_punctuation_and_numbers() -> None:
    assert question_key("How do I reset my password??") == question_key("how do i reset my  PASSWORD 2")


def test_request_then_reply_is_one_turn_with_trace_and_question(tmp_path) -> None:
    store = TurnStore(tmp_path / "c.sqlite3")
    _turn(store, "m1", "Hello?", "ANSWERED", _now())
    (row,) = store.recent(10)
    assert row["message_id"] == "m1" and row["status"] == "ANSWERED" and row["question"] == "Hello?"
    assert row["trace_id"] == f"{'m1':0>32}"
    assert store.recent(5, "s-m1")[0]["message_id"] == "m1"  # found by session id
    assert store.recent(5, f"{'m1':0>32}")[0]["message_id"] == "m1"  # and by trace id


def test_series_percentiles_status_tokens_and_cost(tmp_path) -> None:
    store = TurnStore(tmp_path / "c.sqlite3")
    at = _now() - 1000
    for i, llm in enumerate([100, 200, 300, 400]):
        _turn(store, f"m{i}", "q", "ESCALATED" if i == 0 else "ANSWERED", at, llm=llm)
    s = store.turn_series(at - 60_000, 60_000, input_cost=1.0, output_cost=2.0)
    last = -1 if s["turns_per_s"][-1] else -2
    assert s["status"]["ANSWERED"][last] == 3 and s["status"]["ESCALATED"][last] == 1
    assert s["latency"]["llm"]["p50"][last] in (200, 300) and s["latency"]["llm"]["p99"][last] == 400
    assert s["latency"]["overhead"]["p99"][last] == 40  # latency minus LLM time
    assert s["escalation_rate"][last] == 25.0
    assert s["tokens_per_min"]["input"][last] == 400 and s["tokens_per_min"]["output"][last] == 200
    assert abs(s["cost_per_min"][last] - (400 * 1.0 + 200 * 2.0) / 1e6) < 1e-12


def test_three_questions(tmp_path) -> None:
    store = TurnStore(tmp_path / "c.sqlite3")
    at = _now()
    _turn(store, "a1", "Refund please!", "FALLBACK", at, docs=["refunds"], g=0.1)
    _turn(store, "a2", "refund please", "ESCALATED", at, docs=["refunds"], g=0.2)
    _turn(store, "a3", "Reset password", "ANSWERED", at, docs=["security"], g=0.95)
    store.write([("feedback", {"message_id": "a1", "kind": "THUMBS_DOWN", "score": -1, "created_at": at})])
    (failing,) = store.failing_questions(at - 60_000)
    assert failing["cluster"] == "refund please" and failing["problems"] == 2 and failing["turns"] == 2
    docs = store.weak_documents(at - 60_000)
    assert docs[0]["doc_id"] == "refunds" and docs[0]["thumbs_down"] == 1 and docs[0]["citations"] == 2
    assert store.stage_time_per_turn(at - 60_000)["llm"]["mean"] == 300


def test_store_is_bounded(tmp_path) -> None:
    store = TurnStore(tmp_path / "c.sqlite3", max_turns=1000)
    fill(store, 3000, minutes=5)
    assert 1000 <= store.count() <= 1100
