"""The eval figures on a small hand-checked run (no services)."""

from __future__ import annotations

import math

import pytest

from processors.records import ChatFeedback, ChatRequest, ChatResponse, ChatTurn, Citation, FeedbackKind, Passage, Status
from streams.evaluation.compare import bootstrap_ci, compare, stage_delays, verdict
from streams.evaluation.metrics import percentile, rouge_l, score_label, summarize, token_f1
from streams.evaluation.report import comparison_html, comparison_text, timing_legend
from streams.evaluation.run import build_records
from streams.pipeline import STAGES, TIMING_KEYS
from streams.replay.source import Label

PRICES = {"m": [1.0, 2.0]}  # USD per million tokens


def test_percentile_nearest_rank():
    values = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 100
    assert percentile(values, 10) == 10
    assert math.isnan(percentile([], 50))


def test_token_f1_and_rouge_l_by_hand():
    # pred tokens: the refund takes 5 days ; ref: refund takes 10 days  -> common 3 (refund takes days)
    assert token_f1("The refund takes 5 days [refunds].", "refund takes 10 days") == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    # LCS of (a b c d) and (a c d) = 3 -> P 3/4, R 1 -> F 6/7
    assert rouge_l("a b c d", "a c d") == pytest.approx(6 / 7)
    assert token_f1("", "x") == 0.0 and rouge_l("x", "") == 0.0


def _run():
    """Three turns: answered right (latency 100), answered with the wrong article (300), declined (200)."""
    reqs = [
        ChatRequest("q1", "s1", "u", "web", "how do refunds work", 1_000, metadata={"replay_published_at": "5000"}),
        ChatRequest("q2", "s2", "u", "web", "invoice address wrong", 1_000, metadata={"replay_published_at": "5000"}),
        ChatRequest("q3", "s3", "u", "web", "do you have jira", 1_000, metadata={"replay_published_at": "5000"}),
    ]
    p = lambda doc, rel: Passage(doc, f"{doc}#0", doc, "u", f"{doc} text", 1.0, relevance=rel)  # noqa: E731
    turns = [
        ChatTurn(reqs[0], passages=[p("refunds", 0.7), p("invoices", 0.4)], model="m", provider="openai"),
        ChatTurn(reqs[1], passages=[p("refunds", 0.5), p("invoices", 0.45)], model="m", provider="openai"),
        ChatTurn(reqs[2], passages=[p("webhooks", 0.1)], answerable=False, provider="none"),
    ]

    def resp(req, status, created, cited, text, pt, ct):  # type: ignore[no-untyped-def]
        r = ChatResponse.for_request(req, text, status, citations=[Citation(d, d, "u", 1.0) for d in cited], model="m" if pt else "",
                                     prompt_tokens=pt, completion_tokens=ct, groundedness=0.8 if cited else 0.0,
                                     stage_ms={"enrich": 2, "retrieve": 10, "llm": 50, "validate": 1})
        r.created_at = created
        return r

    responses = [
        resp(reqs[0], Status.ANSWERED, 5100, ["refunds"], "Refunds within 14 days [refunds].", 1000, 100),
        resp(reqs[1], Status.ANSWERED, 5300, ["refunds"], "Refunds within 14 days [refunds].", 3000, 100),
        resp(reqs[2], Status.FALLBACK, 5200, [], "I could not find that in our help center.", 0, 0),
    ]
    feedback = [ChatFeedback("q1", "s1", "u", "web", FeedbackKind.THUMBS_DOWN, 0), ChatFeedback("q1", "s1", "u", "web", FeedbackKind.CSAT, 4)]
    return build_records(reqs, turns, responses, [], feedback)


LABELS = [
    Label("q1", "how do refunds work", ["refunds"], "refunds within 14 days"),
    Label("q2", "invoice address wrong", ["invoices"], "ask support to reissue the invoice"),
    Label("q3", "do you have jira", unanswerable=True),
]


def test_summary_of_a_hand_checked_run():
    s = summarize(_run(), PRICES, LABELS)
    assert s["turns"] == 3 and s["replied"] == 3
    assert s["latency_p50_ms"] == 200 and s["latency_p99_ms"] == 300  # from replay_published_at, not sent_at
    assert s["prompt_tokens_per_turn"] == pytest.approx(4000 / 3)
    assert s["cost_usd_total"] == pytest.approx((1000 * 1 + 100 * 2 + 3000 * 1 + 100 * 2) / 1e6)
    assert s["status_mix"] == {"ANSWERED": 2, "FALLBACK": 1}
    assert s["answered_rate"] == pytest.approx(2 / 3)
    assert s["feedback"] == {"THUMBS_DOWN": 1, "CSAT": 1, "csat_mean": 4}
    assert s["hit_at_1"] == pytest.approx(0.5)  # q1 refunds first; q2 invoices second
    assert s["hit_at_k"] == 1.0
    assert s["mrr"] == pytest.approx((1 + 0.5) / 2)
    assert s["context_precision"] == pytest.approx(0.5)
    assert s["context_recall"] == 1.0
    assert s["answered_right_rate"] == pytest.approx(0.5)  # q2 cites the wrong article
    assert s["unanswerable_declined_rate"] == 1.0
    assert s["answerable_answered_rate"] == 1.0
    assert s["stage_retrieve_p50_ms"] == 10


def test_compare_pairs_by_message_id_and_decides_with_the_bootstrap():
    a = _run()
    b = _run()
    for r in b:
        r.latency_ms = (r.latency_ms or 0) + 100  # B is 100 ms slower on every turn
    b[1].cited = ["invoices"]  # and fixes q2
    result = compare(a, b, PRICES, LABELS, name_a="A", name_b="B", resamples=200)
    by_name = {m.name: m for m in result.metrics}
    assert by_name["latency_ms"].diff == pytest.approx(100) and by_name["latency_ms"].verdict == "B worse"
    assert by_name["prompt_tokens"].verdict == "no significant difference"
    assert by_name["answered_right"].mean_b == 1.0 and by_name["answered_right"].mean_a == 0.5
    assert result.wins["B wins"] == 1 and result.wins["tie"] == 2
    text = comparison_text(result)
    assert "latency_ms" in text and "which integrations add most delay" in text
    page = comparison_html(result, summarize(a, PRICES, LABELS), summarize(b, PRICES, LABELS))
    assert page.count("<svg") == 4  # plots inline: nothing is fetched when the report opens
    assert "<script" not in page and 'src="http' not in page and 'href="http' not in page


def test_bootstrap_ci_and_verdicts():
    low, high = bootstrap_ci([1.0] * 20)
    assert low == high == 1.0
    low, high = bootstrap_ci([-1.0, 1.0] * 20)
    assert low < 0 < high
    assert verdict("latency_ms", 5, 10) == "B worse"
    assert verdict("answered_right", 0.1, 0.2) == "B better"
    assert verdict("answered_right", -0.1, 0.2) == "no significant difference"


def test_unanswerable_scored_only_on_declining():
    record = _run()[2]
    score = score_label(record, LABELS[2])
    assert score.unanswerable and score.declined and score.hit_at_k is None


def test_stage_delays_and_summary_read_the_pipeline_table():
    a, b = _run(), _run()
    for r in (*a, *b):
        r.stage_ms = {"validate": 1, "generate": 60, "llm": 50, "retrieve": 10, "enrich": 2}
        r.latency_ms = 200.0
    rows = {row[0]: row for row in stage_delays(list(zip(a, b)))}
    # generate is measured in parts: its LLM call is the integration shown, and it is not counted twice
    assert set(rows) == {*TIMING_KEYS, "kafka+queue"} - {s.name for s in STAGES if s.parts}
    assert rows["kafka+queue"][1] == 200 - (1 + 60 + 10 + 2)
    s = summarize(a, PRICES, LABELS)
    stage_keys = [k.removeprefix("stage_").removesuffix("_p50_ms") for k in s if k.startswith("stage_") and k.endswith("_p50_ms")]
    assert stage_keys == list(TIMING_KEYS)  # pipeline order, not alphabetical
    legend = timing_legend()
    assert all(f"{k} = " in legend for k in rows if k != "kafka+queue")
