"""The validate stage's logic: turn a generated ``ChatTurn`` into the reply the user gets.

Order of decisions (the first that applies sets the status):

1. BLOCKED: the answer repeats the system prompt or echoes a prompt injection ("my instructions
   are...", "ignore previous instructions"). The answer is never shown.
2. (after a hand-off request) FALLBACK "not covered": retrieval found no passage relevant enough
   (``turn.answerable`` False, see ``processors.relevance``): the tenant's honest "I could not find
   that in our help center" reply, no citations, rule ``not_covered``. It does not escalate: saying
   "we do not know" is the right answer to a question the help center does not cover.
3. ESCALATED: the user asks for a human; or the answer is a non-degraded one whose groundedness is
   below ``min_groundedness`` (low confidence: it is not shown, a human takes over); or this turn
   failed too (degraded, empty or "I could not find it") and the session already had
   ``escalate_after_failures`` failed turns in a row. A clean grounded answer is delivered even
   after earlier failures: escalating a good answer helps nobody, and the session stage resets the
   streak on ANSWERED. An escalation record carries the transcript (history + this turn).
4. FALLBACK: the answer came from the degraded path (extractive fallback, retrieval down), or
   there is no usable answer (empty, or the answer says it found nothing).
5. ANSWERED.

Whatever the status, shown text is PII-redacted and capped at ``max_answer_chars``; citations are
kept only for passages the answer actually used (cited ``[doc_id]`` or strong overlap).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from processors.records import ChatEscalation, ChatResponse, ChatTurn, Citation, HistoryTurn, Status, now_ms
from processors.validation import rules
from processors.validation.groundedness import assess
from processors.validation.pii import redact

HANDOFF_REQUESTED = (
    "Of course. I'm handing this conversation to a human agent, who will reply here as soon as possible."
)
HANDOFF_LOW_CONFIDENCE = (
    "I'm not sure enough of the answer to give it to you, so I've passed your question to a human agent, "
    "who will reply here as soon as possible."
)
HANDOFF_REPEATED_FAILURES = (
    "I'm sorry I couldn't help with this. I've passed the conversation to a human agent, who will reply "
    "here as soon as possible."
)
BLOCKED_REPLY = "Sorry, I can't help with that. I can answer questions about our products, billing and your account."
NOT_FOUND_REPLY = (
    "I could not find that in our help center, so I would rather not guess. Could you rephrase the "
    "question, or ask to talk to a human agent?"
)
EMPTY_REPLY = "Sorry, I couldn't produce an answer just now. Please try again in a moment."


@dataclass
class Verdict:
    response: ChatResponse
    escalation: ChatEscalation | None = None
    failed_rules: list[str] = field(default_factory=list)


class Validator:
    def __init__(
        self,
        *,
        system_prompt: str,
        max_answer_chars: int = 4000,
        min_groundedness: float = 0.35,
        escalate_after_failures: int = 2,
        not_found_reply: str = NOT_FOUND_REPLY,
        not_found_replies: dict[str, str] | None = None,
    ) -> None:
        if max_answer_chars < 50:
            raise ValueError("max_answer_chars must be at least 50")
        if not 0.0 <= min_groundedness <= 1.0:
            raise ValueError("min_groundedness must be between 0 and 1")
        if escalate_after_failures < 1:
            raise ValueError("escalate_after_failures must be at least 1")
        self.system_prompt = system_prompt
        self.max_answer_chars = max_answer_chars
        self.min_groundedness = min_groundedness
        self.escalate_after_failures = escalate_after_failures
        self.not_found_reply = not_found_reply
        self.not_found_replies = dict(not_found_replies or {})

    @classmethod
    def from_settings(cls, settings) -> "Validator":  # settings: streams.config.Settings
        return cls(
            system_prompt=settings.system_prompt,
            max_answer_chars=settings.max_answer_chars,
            min_groundedness=settings.min_groundedness,
            escalate_after_failures=settings.escalate_after_failures,
            not_found_reply=settings.not_found_reply,
            not_found_replies=settings.not_found_replies,
        )

    def not_found_text(self, tenant: str) -> str:
        """The tenant's wording for "the help center does not cover this"."""
        return self.not_found_replies.get(tenant) or self.not_found_reply

    def validate(self, turn: ChatTurn) -> Verdict:
        request = turn.request
        failed: list[str] = []
        answer = (turn.answer or "").strip()

        if rules.injection_attempt(request.text):
            failed.append("prompt_injection_attempt")
        empty = not answer
        if empty:
            failed.append("empty_answer")
        if len(answer) > self.max_answer_chars:
            failed.append("overlong_answer")
            answer = rules.truncate_answer(answer, self.max_answer_chars)

        published = [f"{p.title}\n{p.text}" for p in turn.passages]
        redaction = redact(answer, allowed=published)
        answer = redaction.text
        failed += [f"pii_{kind}" for kind in sorted(redaction.found)]

        grounding = assess(answer, turn.passages)
        if grounding.unknown_citations:
            failed.append("unknown_citation")
        abstained = not empty and rules.is_abstention(answer)
        if abstained:
            failed.append("no_answer")

        leak = not empty and rules.leaks_system_prompt(answer, self.system_prompt)
        echo = not empty and rules.injection_echo(answer)
        if leak:
            failed.append("system_prompt_leak")
        if echo:
            failed.append("prompt_injection_echo")

        not_covered = not turn.answerable and turn.retrieval_ok
        if not_covered:
            failed = [rule for rule in failed if rule != "empty_answer"]  # nothing was generated on purpose
            failed.append("not_covered")
        turn_failed = turn.degraded or empty or abstained
        low_confidence = not turn_failed and not not_covered and grounding.score < self.min_groundedness
        if low_confidence:
            failed.append("low_groundedness")

        escalation_reason: str | None = None
        if leak or echo:
            reason = "system_prompt_leak" if leak else "prompt_injection_echo"
            status, text = Status.BLOCKED, BLOCKED_REPLY
        elif rules.asks_for_human(request.text):
            status, text, reason = Status.ESCALATED, HANDOFF_REQUESTED, "user_requested_human"
        elif not_covered:
            status, text, reason = Status.FALLBACK, self.not_found_text(request.tenant), "not_covered"
        elif low_confidence:
            status, text, reason = Status.ESCALATED, HANDOFF_LOW_CONFIDENCE, "low_confidence"
        elif turn_failed and turn.session_failures >= self.escalate_after_failures:
            status, text, reason = Status.ESCALATED, HANDOFF_REPEATED_FAILURES, "repeated_failures"
        elif empty:
            status, text, reason = Status.FALLBACK, EMPTY_REPLY, "empty_answer"
        elif turn.degraded:
            status, text, reason = Status.FALLBACK, answer, "degraded"
        elif abstained:
            status, text, reason = Status.FALLBACK, answer, "no_answer"
        else:
            status, text, reason = Status.ANSWERED, answer, None
        if status is Status.ESCALATED:
            escalation_reason = reason

        citations: list[Citation] = []
        if text == answer and not abstained and not not_covered:
            best: dict[str, Citation] = {}
            for passage in turn.passages:
                if passage.doc_id in grounding.used_doc_ids:
                    current = best.get(passage.doc_id)
                    if current is None or passage.score > current.score:
                        best[passage.doc_id] = Citation(passage.doc_id, passage.title, passage.source, passage.score)
            citations = [best[d] for d in grounding.used_doc_ids if d in best]

        response = ChatResponse.for_request(
            request,
            text,
            status,
            citations=citations,
            model=turn.model,
            prompt_tokens=turn.prompt_tokens,
            completion_tokens=turn.completion_tokens,
            reason=reason,
            groundedness=grounding.score,
            stage_ms=dict(turn.stage_ms),
        )
        escalation = None
        if escalation_reason is not None:
            escalation = ChatEscalation(
                message_id=request.message_id,
                session_id=request.session_id,
                user_id=request.user_id,
                channel=request.channel,
                reason=escalation_reason,
                transcript=[
                    *turn.history,
                    HistoryTurn(role="user", text=request.text, message_id=request.message_id, at=request.sent_at),
                    HistoryTurn(role="assistant", text=text, message_id=request.message_id, at=now_ms()),
                ],
                tenant=request.tenant,
                metadata={
                    "groundedness": f"{grounding.score:.2f}",
                    "failed_rules": ",".join(failed),
                    "session_failures": str(turn.session_failures),
                    "degraded": str(turn.degraded).lower(),
                },
            )
        return Verdict(response=response, escalation=escalation, failed_rules=failed)
