"""The question a turn asks, condensed with the conversation when it leans on it.

A follow-up such as "what if I lose my phone?" or "how long until it gets locked?" names too
little to search for on its own: its subject is in the previous exchange. Without an LLM to rewrite
it as a standalone question (the default generation is extractive), the condensed question is the
previous user message followed by the latest one. It is used for the search (BM25 and vector), for
the answerability decision (with the latest text alone as a second reading, ``processors.relevance``)
and by the extractive answer to choose sentences. A question that stands alone is used as it is, so
an old topic does not pull in stale passages.

A message leans on the previous one when it is short or anaphoric (``is_follow_up``). Whether it
does is decided from its words only: cheap, deterministic, the same in the retriever, the
evaluation and the extractive provider.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9']+")
FOLLOW_UP_OPENERS = (
    "and",
    "also",
    "but",
    "or",
    "so",
    "then",
    "what about",
    "how about",
    "what if",
    "same for",
    "ok",
    "okay",
)
ANAPHORA = frozenset({"it", "its", "it's", "that", "this", "those", "these", "them", "they", "their", "one", "same", "he", "she"})
SHORT_WORDS = 3  # this short, a message is a follow-up whatever it says ("pricing?", "and for teams?")
MAX_WORDS = 10  # longer messages stand alone
MAX_CONTEXT_CHARS = 300


def is_follow_up(text: str) -> bool:
    """A short message that leans on the previous one ("and for teams?", "how much does it cost?").

    Tried and dropped: a short question with "the" ("how long is the download link valid?") as a
    follow-up. It also caught standalone questions in a conversation ("where is the data hosted"
    after a question about Okta) whose search the previous topic then pulled off course, and
    uncovered follow-ups ("can the export go straight to google drive?") that the previous topic
    made look covered."""
    lowered = text.strip().lower()
    words = _WORD.findall(lowered)
    if not words:
        return False
    if len(words) <= SHORT_WORDS:
        return True
    if len(words) > MAX_WORDS:
        return False
    if any(lowered.startswith(opener + " ") or lowered.startswith(opener + ",") for opener in FOLLOW_UP_OPENERS):
        return True
    return any(w in ANAPHORA for w in words)


def _looks_like_identifier(word: str) -> bool:
    core = word.strip("()[]{}<>.,;:!?'\"#")
    return len(core) >= 6 and sum(c.isdigit() for c in core) >= 2


def searchable_text(text: str) -> str:
    """A user's text as the knowledge base sees it: whitespace folded, identifiers left out.

    Order numbers, ticket references and ids ("ref 1a047f8a-e453-...") mean nothing to a help center:
    BM25 finds none of them and they pull the query's embedding away from its meaning, enough to make
    a plain covered question look unanswerable. Short numbers ("2FA", "500 GB") stay.
    """
    return " ".join(w for w in text.split() if not _looks_like_identifier(w))


def condensed_question(latest: str, previous: str) -> str:
    """``latest`` as searched: on its own, or after ``previous`` (the user's message before it,
    cut to ``MAX_CONTEXT_CHARS``) when it is a follow-up and there is one."""
    latest, previous = searchable_text(latest), searchable_text(previous)
    if not previous or not is_follow_up(latest):
        return latest
    return f"{previous[:MAX_CONTEXT_CHARS]} {latest}"


def previous_user_message(messages: Sequence[dict]) -> str:
    """The user message before the last one in chat-completion ``messages`` ("" when there is none)."""
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    return users[-2] if len(users) >= 2 else ""
