"""Prompt assembly within a token budget.

Layout (the order the model reads it):

1. system message: the system prompt, then the rolling summary of older turns (if any);
2. the recent turns verbatim, as user/assistant messages, oldest first;
3. one user message: the retrieved passages, each introduced by its ``[doc_id]`` and title, then
   the question after ``Question:``.

Passages go in the final user message, not in a later system message, because several
OpenAI-compatible servers (llama.cpp and vLLM chat templates among them) reject system messages
after the first one. ``split_user_message`` reads that layout back; the extractive provider and the
scripted dev server use it to find the question and the passages.

Budget (tokens estimated as characters / 4, see ``provider.estimate_tokens``): the system prompt
and the question are never dropped (if they alone exceed the budget the prompt is over budget and
says so). What is left goes, in order, to: the summary (at most a fifth of it, cut at a word
boundary), the passages in rank order (at most 60 % of the rest when there is history to keep,
the last one that does not fit is cut if a useful piece of it fits), the recent turns newest first
(an old turn is dropped before a newer one), and then any passages that did not fit before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from processors.generation.provider import estimate_tokens
from processors.records import HistoryTurn, Passage

PASSAGES_HEADER = "Passages:"
QUESTION_MARKER = "Question:"
NO_PASSAGES = "(no passages were found for this question)"
SUMMARY_HEADER = "Summary of the earlier conversation:"

MESSAGE_OVERHEAD_TOKENS = 4  # role and separators, per message (OpenAI's documented overhead is 3-4)
MIN_PASSAGE_TOKENS = 40  # a passage cut shorter than this is noise, not evidence
SUMMARY_SHARE = 0.2
PASSAGE_SHARE_WITH_HISTORY = 0.6

_PASSAGE_LINE = re.compile(r"^\[([^\]\s]+)\]\s*(.*)$")


@dataclass
class Prompt:
    """Messages ready for a chat-completions call and what made it in."""

    messages: list[dict]
    passages: list[Passage] = field(default_factory=list)
    history: list[HistoryTurn] = field(default_factory=list)
    summary_included: bool = False
    tokens: int = 0
    budget: int = 0

    @property
    def over_budget(self) -> bool:
        return self.tokens > self.budget


def format_passage(passage: Passage, text: str | None = None) -> str:
    body = " ".join((passage.text if text is None else text).split())
    title = " ".join(passage.title.split())
    return f"[{passage.doc_id}] {title}\n{body}"


def truncate_to_tokens(text: str, tokens: int) -> str:
    """Cut ``text`` to about ``tokens`` tokens at a word boundary, marking the cut with an ellipsis."""
    if estimate_tokens(text) <= tokens:
        return text
    limit = max(0, tokens * 4 - 1)
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def _history_role(turn: HistoryTurn) -> str:
    return "assistant" if turn.role in ("assistant", "bot", "agent") else "user"


def _turn_tokens(turn: HistoryTurn) -> int:
    return estimate_tokens(turn.text) + MESSAGE_OVERHEAD_TOKENS


def build_prompt(
    *,
    system_prompt: str,
    question: str,
    summary: str = "",
    history: Sequence[HistoryTurn] = (),
    passages: Sequence[Passage] = (),
    budget_tokens: int,
    current_message_id: str | None = None,
) -> Prompt:
    """Assemble the messages for one turn so that they fit ``budget_tokens`` where possible."""
    if budget_tokens <= 0:
        raise ValueError("budget_tokens must be positive")
    question = question.strip()
    if not question:
        raise ValueError("the question is empty")
    # The session stage may already have appended this turn to the history; never send it twice.
    history = [
        t
        for t in history
        if t.text.strip() and not (current_message_id and t.message_id == current_message_id and t.role == "user")
    ]

    user_fixed = f"{PASSAGES_HEADER}\n\n{QUESTION_MARKER} {question}"
    mandatory = (
        estimate_tokens(system_prompt) + MESSAGE_OVERHEAD_TOKENS + estimate_tokens(user_fixed) + MESSAGE_OVERHEAD_TOKENS
    )
    remaining = budget_tokens - mandatory

    summary_text = ""
    if summary.strip() and remaining > MIN_PASSAGE_TOKENS:
        summary_budget = int(remaining * SUMMARY_SHARE) - estimate_tokens(SUMMARY_HEADER) - 2
        if summary_budget >= 10:
            summary_text = truncate_to_tokens(" ".join(summary.split()), summary_budget)
            remaining -= estimate_tokens(SUMMARY_HEADER) + 2 + estimate_tokens(summary_text)

    ranked = sorted(enumerate(passages), key=lambda ip: (-ip[1].score, ip[0]))
    chosen: dict[int, str] = {}  # rank index -> text used (maybe cut)

    def fill_passages(limit: int) -> int:
        used = 0
        for rank, (_, passage) in enumerate(ranked):
            if rank in chosen:
                continue
            cost = estimate_tokens(format_passage(passage)) + 1
            if used + cost <= limit:
                chosen[rank] = passage.text
                used += cost
                continue
            room = limit - used - estimate_tokens(format_passage(passage, "")) - 2
            if room >= MIN_PASSAGE_TOKENS:
                cut = truncate_to_tokens(" ".join(passage.text.split()), room)
                chosen[rank] = cut
                used += estimate_tokens(format_passage(passage, cut)) + 1
            break  # keep rank order: never skip a better passage for a worse one that happens to fit
        return used

    first_share = int(remaining * PASSAGE_SHARE_WITH_HISTORY) if history else remaining
    remaining -= fill_passages(max(0, first_share))

    kept_history: list[HistoryTurn] = []
    for turn in reversed(history):
        cost = _turn_tokens(turn)
        if cost > remaining:
            break  # dropping an old turn but keeping an older one would make a confusing dialogue
        kept_history.append(turn)
        remaining -= cost
    kept_history.reverse()

    if len(chosen) < len(ranked) and remaining > MIN_PASSAGE_TOKENS:
        remaining -= fill_passages(remaining)

    used_passages = [ranked[r][1] for r in sorted(chosen)]
    system = system_prompt if not summary_text else f"{system_prompt}\n\n{SUMMARY_HEADER}\n{summary_text}"
    blocks = [format_passage(ranked[r][1], chosen[r]) for r in sorted(chosen)]
    body = "\n\n".join(blocks) if blocks else NO_PASSAGES
    user = f"{PASSAGES_HEADER}\n{body}\n\n{QUESTION_MARKER} {question}"
    messages = [{"role": "system", "content": system}]
    messages += [{"role": _history_role(t), "content": t.text} for t in kept_history]
    messages.append({"role": "user", "content": user})
    tokens = sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)
    return Prompt(
        messages=messages,
        passages=used_passages,
        history=kept_history,
        summary_included=bool(summary_text),
        tokens=tokens,
        budget=budget_tokens,
    )


@dataclass
class ParsedPassage:
    doc_id: str
    title: str
    text: str


def split_user_message(content: str) -> tuple[list[ParsedPassage], str]:
    """Read back the passages and the question from a final user message built by ``build_prompt``.

    A message in any other layout is taken as the question itself with no passages. The first
    blank line followed by ``Question:`` is the marker: passage texts are whitespace-collapsed, so
    they hold no blank line, and a question that itself contains "Question:" stays whole.
    """
    marker = content.find(f"\n\n{QUESTION_MARKER}")
    if marker < 0 or PASSAGES_HEADER not in content[:marker]:
        return [], content.strip()
    question = content[marker + 2 + len(QUESTION_MARKER) :].strip()
    head = content[:marker]
    start = head.find(PASSAGES_HEADER)
    body = head[start + len(PASSAGES_HEADER) :] if start >= 0 else head
    passages: list[ParsedPassage] = []
    for block in re.split(r"\n\s*\n", body.strip()):
        lines = block.strip().splitlines()
        if not lines:
            continue
        match = _PASSAGE_LINE.match(lines[0].strip())
        if not match:
            continue
        passages.append(ParsedPassage(match.group(1), match.group(2).strip(), " ".join(" ".join(lines[1:]).split())))
    return passages, question


def last_user_content(messages: Sequence[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content") or ""
            if isinstance(content, list):  # content parts
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content)
    return ""
