import pytest

from processors.generation.prompt import (
    NO_PASSAGES,
    QUESTION_MARKER,
    SUMMARY_HEADER,
    build_prompt,
    split_user_message,
    truncate_to_tokens,
)
from processors.generation.provider import estimate_tokens
from processors.records import HistoryTurn, Passage

SYSTEM = "You are a support assistant. Answer only from the passages and cite them as [doc_id]."


def passage(i: int, words: int = 60, score: float | None = None) -> Passage:
    text = " ".join(f"word{i}_{j}" for j in range(words)) + "."
    return Passage(f"doc-{i}", f"doc-{i}#0", f"Title {i}", f"kb/{i}.md", text, 1.0 - i / 10 if score is None else score)


def history(n: int) -> list[HistoryTurn]:
    return [HistoryTurn(role="user" if i % 2 == 0 else "assistant", text=f"turn {i} " + "x" * 200) for i in range(n)]


def test_layout_when_everything_fits():
    prompt = build_prompt(
        system_prompt=SYSTEM,
        question="How do refunds work?",
        summary="The user asked about billing.",
        history=history(2),
        passages=[passage(1), passage(2)],
        budget_tokens=3000,
    )
    roles = [m["role"] for m in prompt.messages]
    assert roles == ["system", "user", "assistant", "user"]
    system = prompt.messages[0]["content"]
    assert system.startswith(SYSTEM) and SUMMARY_HEADER in system and "The user asked about billing." in system
    last = prompt.messages[-1]["content"]
    assert last.index("[doc-1] Title 1") < last.index("[doc-2] Title 2") < last.index(QUESTION_MARKER)
    assert last.endswith("Question: How do refunds work?")
    assert [p.doc_id for p in prompt.passages] == ["doc-1", "doc-2"]
    assert prompt.summary_included and not prompt.over_budget
    assert prompt.tokens <= 3000


def test_tight_budget_keeps_system_and_question_and_drops_oldest_history_and_worst_passages():
    turns = history(10)
    passages = [passage(i, words=80) for i in range(1, 6)]
    prompt = build_prompt(
        system_prompt=SYSTEM, question="Where is my invoice?", history=turns, passages=passages, budget_tokens=600
    )
    assert prompt.messages[0]["content"] == SYSTEM
    assert prompt.messages[-1]["content"].endswith("Question: Where is my invoice?")
    assert prompt.tokens <= 600
    # The newest turns survive, the oldest go first, and what survives is contiguous.
    kept = [t.text for t in prompt.history]
    assert kept and kept == [t.text for t in turns[-len(kept) :]]
    assert len(kept) < len(turns)
    # Passages are kept best-first: never a worse one instead of a better one.
    kept_ids = [p.doc_id for p in prompt.passages]
    assert kept_ids == [f"doc-{i}" for i in range(1, len(kept_ids) + 1)]
    assert 1 <= len(kept_ids) < 5


def test_passages_ordered_by_score_not_input_order():
    prompt = build_prompt(
        system_prompt=SYSTEM,
        question="q?",
        passages=[passage(1, score=0.2), passage(2, score=0.9)],
        budget_tokens=3000,
    )
    assert [p.doc_id for p in prompt.passages] == ["doc-2", "doc-1"]


def test_a_long_top_passage_is_cut_rather_than_dropped():
    big = passage(1, words=2000)
    prompt = build_prompt(system_prompt=SYSTEM, question="q?", passages=[big], budget_tokens=400)
    assert [p.doc_id for p in prompt.passages] == ["doc-1"]
    assert "…" in prompt.messages[-1]["content"]
    assert prompt.tokens <= 400


def test_system_prompt_and_question_are_never_dropped_even_over_budget():
    question = "why " * 400
    prompt = build_prompt(
        system_prompt=SYSTEM, question=question, history=history(4), passages=[passage(1)], budget_tokens=100
    )
    assert prompt.over_budget
    assert prompt.messages[0]["content"] == SYSTEM
    assert question.strip() in prompt.messages[-1]["content"]
    assert prompt.passages == [] and prompt.history == []
    assert NO_PASSAGES in prompt.messages[-1]["content"]


def test_current_turn_in_history_is_not_sent_twice():
    turns = [HistoryTurn("user", "earlier", "m-0"), HistoryTurn("assistant", "reply", "m-0"), HistoryTurn("user", "now?", "m-1")]
    prompt = build_prompt(system_prompt=SYSTEM, question="now?", history=turns, budget_tokens=3000, current_message_id="m-1")
    assert [m["content"] for m in prompt.messages[1:-1]] == ["earlier", "reply"]


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        build_prompt(system_prompt=SYSTEM, question="   ", budget_tokens=100)
    with pytest.raises(ValueError):
        build_prompt(system_prompt=SYSTEM, question="q", budget_tokens=0)


def test_split_user_message_reads_back_the_layout():
    prompt = build_prompt(system_prompt=SYSTEM, question="How?", passages=[passage(1, 5), passage(2, 5)], budget_tokens=3000)
    parsed, question = split_user_message(prompt.messages[-1]["content"])
    assert question == "How?"
    assert [(p.doc_id, p.title) for p in parsed] == [("doc-1", "Title 1"), ("doc-2", "Title 2")]
    assert parsed[0].text.startswith("word1_0")
    assert split_user_message("just a question") == ([], "just a question")


def test_split_user_message_with_markers_inside_passages_and_question():
    faq = Passage("faq-1", "faq-1#0", "FAQ", "kb/faq.md", "Question: can I pause?\n\nQuestion: Answer: yes.", 0.9)
    question = "Question: what about\n\nQuestion: this?"
    prompt = build_prompt(system_prompt=SYSTEM, question=question, passages=[faq], budget_tokens=3000)
    parsed, got = split_user_message(prompt.messages[-1]["content"])
    assert got == question
    assert [(p.doc_id, p.text) for p in parsed] == [("faq-1", "Question: can I pause? Question: Answer: yes.")]


def test_truncate_to_tokens_cuts_at_a_word():
    text = "alpha beta gamma delta " * 50
    cut = truncate_to_tokens(text, 10)
    assert estimate_tokens(cut) <= 10 and cut.endswith("…") and "  " not in cut
    assert truncate_to_tokens("short", 10) == "short"
