"""Text rules of the validate stage: hand-off requests, prompt injection, leaks, abstentions, length.

Pattern lists are deliberately narrow: a false "talk to a human" escalates a turn a bot could have
answered, and a false BLOCKED hides a good answer, so every pattern needs the words that make the
intent unambiguous ("talk to an agent", not "agent"; "my instructions are", not "the instructions").
"""

from __future__ import annotations

import re
from functools import lru_cache

from processors.generation.text import normalized_words, split_sentences

_FLAGS = re.IGNORECASE

HUMAN_REQUEST = [
    re.compile(p, _FLAGS)
    for p in (
        r"\b(talk|speak|chat|connect|transfer|put|escalate)\w*\b(\s+\w+){0,3}?\s+(to|with|through\s+to)\s+"
        r"(a|an|the|some|your|real|live|actual)?\s*(real\s+|live\s+|actual\s+|human\s+|customer\s+service\s+)?"
        r"(human|person|people|agent|representative|rep|operator|someone|somebody|staff|employee|support|"
        r"customer\s+(service|support|care))\b",
        r"\b(human|live|real)\s+(agent|person|being|support|representative|operator)\b",
        r"\b(customer\s+service|support)\s+(agent|representative|rep)\b",
        r"\brepresentative\b",
        r"\b(i\s+(want|need|would\s+like)|get\s+me|give\s+me)\s+(a|an|to\s+talk\s+to\s+a)?\s*(human|person|agent)\b",
        r"\bnot\s+(a|another|this)\s+(bot|robot|machine)\b",
    )
]

INJECTION_REQUEST = [
    re.compile(p, _FLAGS)
    for p in (
        r"\b(ignore|disregard|forget|override|bypass)\b(\s+\w+){0,3}\s+"
        r"(instructions|rules|prompts?|directions|guidelines)\b",
        r"\b(reveal|print|show|repeat|output|display|leak|tell\s+me|what\s+(is|are))\b(\s+\w+){0,2}\s+"
        r"(system\s+prompt|initial\s+prompt|hidden\s+prompt|instructions|guidelines)\b",
        r"\b(developer|dan|jailbreak|god)\s+mode\b",
        r"\byou\s+are\s+now\s+(a|an|in|no\s+longer)\b",
    )
]

INJECTION_ECHO = [
    re.compile(p, _FLAGS)
    for p in (
        r"\b(ignore|disregard|forget)\b(\s+\w+){0,3}\s+(previous|prior|above|earlier|preceding)\s+"
        r"(instructions|rules|prompts?)\b",
        r"\bmy\s+(system\s+)?(prompt|instructions|guidelines)\s+(is|are|says?|reads?|:)",
        r"\bhere\s+(is|are)\s+(my|the)\s+(system\s+prompt|instructions|initial\s+prompt|hidden\s+prompt)\b",
        r"\bthe\s+system\s+prompt\s+(is|says|reads|:)",
        r"\bi\s+(was|am|have\s+been)\s+(told|instructed|programmed)\s+to\b",
        r"\b(developer|dan|jailbreak|god)\s+mode\s+(is\s+)?(enabled|activated|on|unlocked)\b",
        r"\bi\s+am\s+(now\s+)?dan\b",
    )
]

ABSTENTION = [
    re.compile(p, _FLAGS)
    for p in (
        r"\b(could\s*n[o']?t|can\s*n[o']?t|cannot|was\s+unable\s+to|am\s+unable\s+to|did\s*n[o']?t)\s+find\b",
        r"\b(do\s+not|don't|does\s+not|doesn't)\s+(have|contain|include|cover|mention)\b.{0,40}"
        r"\b(information|answer|details)\b",
        r"\bno\s+(information|answer|details)\s+(about|on|for|regarding)\b",
        r"\bi\s+(do\s+not|don't)\s+know\b",
        r"\bnot\s+(mentioned|covered|addressed)\s+in\s+the\s+(passages|documents|help\s+center|sources)\b",
    )
]


def asks_for_human(text: str) -> bool:
    return any(p.search(text) for p in HUMAN_REQUEST)


def injection_attempt(text: str) -> bool:
    return any(p.search(text) for p in INJECTION_REQUEST)


def injection_echo(answer: str) -> bool:
    return any(p.search(answer) for p in INJECTION_ECHO)


def is_abstention(answer: str) -> bool:
    """The answer honestly says it has no answer (judged on its first two sentences)."""
    head = " ".join(split_sentences(answer)[:2])
    return any(p.search(head) for p in ABSTENTION)


def leaks_system_prompt(
    answer: str, system_prompt: str, *, n: int = 5, share: float = 0.25, min_hits: int = 3, enough_hits: int = 8
) -> bool:
    """True when the answer repeats a substantial part of the system prompt verbatim.

    Counted in word ``n``-grams: a leak is ``min_hits`` n-grams or ``share`` of the prompt's
    n-grams, whichever is larger (3 five-word n-grams is at least 7 consecutive words). A system
    prompt shorter than ``n`` words leaks when it appears whole.
    """
    prompt_words = _prompt_words(system_prompt)
    answer_words = normalized_words(answer)
    if not prompt_words or not answer_words:
        return False
    if len(prompt_words) < n:
        joined = " ".join(prompt_words)
        return f" {joined} " in f" {' '.join(answer_words)} "
    prompt_grams = _grams(prompt_words, n)
    answer_grams = {tuple(answer_words[i : i + n]) for i in range(len(answer_words) - n + 1)}
    hits = len(prompt_grams & answer_grams)
    return hits >= min(enough_hits, max(min_hits, share * len(prompt_grams)))


@lru_cache(maxsize=16)
def _prompt_words(system_prompt: str) -> tuple[str, ...]:
    return tuple(normalized_words(system_prompt))


@lru_cache(maxsize=16)
def _grams(words: tuple[str, ...], n: int) -> frozenset[tuple[str, ...]]:
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def truncate_answer(answer: str, max_chars: int) -> str:
    """Cut an overlong answer at the last sentence end that fits (a word boundary otherwise)."""
    if len(answer) <= max_chars:
        return answer
    limit = max_chars - 1
    kept = ""
    for sentence in split_sentences(answer):
        candidate = f"{kept} {sentence}".strip()
        if len(candidate) > limit:
            break
        kept = candidate
    if len(kept) < limit // 2:
        kept = answer[:limit]
        space = kept.rfind(" ")
        if space > limit // 2:
            kept = kept[:space]
    return kept.rstrip() + "…"
