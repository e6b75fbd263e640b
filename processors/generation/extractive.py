"""An answer without an LLM: the retrieved sentences that best match the question, cited.

It is the default provider when no LLM is configured and the degraded mode when every LLM's
circuit is open, so it must never fail and never invent: it only quotes passages, and it says so
plainly when there is nothing to quote. Deterministic (same turn, same answer), so replays and
tests are stable.
"""

from __future__ import annotations

import time
from functools import lru_cache

from processors.condense import condensed_question, previous_user_message
from processors.generation.prompt import last_user_content, split_user_message
from processors.generation.provider import Completion, estimate_tokens
from processors.generation.text import content_words, split_sentences
from processors.records import Passage

NO_ANSWER = (
    "I could not find an answer to that in our help center. "
    "Could you rephrase the question, or ask to talk to a human agent?"
)
# The intro stands on its own line, and has fewer content words than validation judges a sentence
# by (processors.validation.groundedness.MIN_CONTENT_WORDS): joined to a short quote it was judged
# as one sentence with it, and its words are in no passage ("do you take paypal" was escalated as
# ungrounded while quoting the one sentence that answers it); judged alone it lowered every answer's
# groundedness.
INTRO = "From our help center:"
INTRO_SEPARATOR = "\n\n"


class ExtractiveProvider:
    """Quotes the sentences of the top passages that overlap the question most, with ``[doc_id]``."""

    system = "extractive"

    def __init__(
        self, *, name: str = "extractive", max_passages: int = 3, max_sentences: int = 3, max_sentence_chars: int = 400
    ) -> None:
        if max_passages < 1 or max_sentences < 1:
            raise ValueError("max_passages and max_sentences must be at least 1")
        self.name = name
        self.model = "extractive"
        self.max_passages = max_passages
        self.max_sentences = max_sentences
        self.max_sentence_chars = max_sentence_chars

    async def complete(self, messages: list[dict], *, max_tokens: int, passages: list[Passage]) -> Completion:
        started = time.perf_counter()
        _, question = split_user_message(last_user_content(messages))
        # a follow-up's sentences are chosen with the question it continues (processors.condense)
        previous = split_user_message(previous_user_message(messages))[1]
        text = self.answer(question, passages, max_chars=max(40, max_tokens * 4), previous=previous)
        prompt_tokens = sum(estimate_tokens(str(m.get("content") or "")) for m in messages)
        return Completion(
            text=text,
            model=self.model,
            provider=self.name,
            prompt_tokens=prompt_tokens,
            completion_tokens=estimate_tokens(text),
            latency_ms=int((time.perf_counter() - started) * 1000),
        )

    def answer(self, question: str, passages: list[Passage], *, max_chars: int = 1600, previous: str = "") -> str:
        """The extractive answer for ``question`` (plain function, usable without a prompt).

        ``previous`` is the user's message before it: a follow-up ("how long until it gets locked?")
        is matched against the sentences as its condensed question, whose own words count double so
        the previous topic does not outweigh what is asked now."""
        ranked = sorted(enumerate(passages), key=lambda ip: (-ip[1].score, ip[0]))[: self.max_passages]
        ranked_passages = [p for _, p in ranked if p.text.strip()]
        if not ranked_passages:
            return NO_ANSWER
        wanted = set(content_words(question))
        context = set(content_words(condensed_question(question, previous))) - wanted
        # (overlap, -passage rank, -position) so ties prefer better passages and earlier sentences.
        candidates: list[tuple[int, int, int, str, str]] = []
        for rank, passage in enumerate(ranked_passages):
            for pos, (sentence, vocab) in enumerate(_sentences(passage.text)):
                if len(sentence) > self.max_sentence_chars or len(vocab) < 2:
                    continue
                overlap = 2 * len(wanted & vocab) + len(context & vocab)
                candidates.append((overlap, -rank, -pos, sentence, passage.doc_id))
        if not candidates:
            return NO_ANSWER
        best = sorted(candidates, reverse=True)
        picked = [c for c in best if c[0] > 0][: self.max_sentences]
        if not picked:
            # No word in common (a paraphrase the vector search matched): lead with the top passage.
            picked = sorted((c for c in candidates if c[1] == 0), key=lambda c: -c[2])[:2]
        picked.sort(key=lambda c: (-c[1], -c[2]))  # passage rank, then reading order
        parts: list[str] = []
        length = len(INTRO) + len(INTRO_SEPARATOR) - 1
        for _, _, _, sentence, doc_id in picked:
            part = f"{_strip_end(sentence)} [{doc_id}]."
            if length + 1 + len(part) > max_chars and parts:
                break
            parts.append(part)
            length += 1 + len(part)
        return INTRO + INTRO_SEPARATOR + " ".join(parts)


@lru_cache(maxsize=4096)  # the same passages come back turn after turn
def _sentences(text: str) -> tuple[tuple[str, frozenset[str]], ...]:
    return tuple((s, frozenset(content_words(s))) for s in split_sentences(text))


def _strip_end(sentence: str) -> str:
    return sentence.strip().rstrip(".!?;:").rstrip()
