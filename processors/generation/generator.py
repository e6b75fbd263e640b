"""The generate stage's logic: prompt, LLM (with failover), extractive fallback.

``generate`` never raises for provider trouble: when every LLM fails or its circuit is open the
extractive provider answers from the retrieved passages and the turn is marked ``degraded`` (the
validator turns that into status FALLBACK). When retrieval itself failed there is nothing to ground
an answer on, so no LLM is called: the answer says plainly that the lookup failed.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from opentelemetry import trace

from processors.generation.deadline import TurnDeadline
from processors.generation.extractive import ExtractiveProvider
from processors.generation.failover import FailoverProvider
from processors.generation.openai_provider import OpenAIProvider
from processors.generation.prompt import build_prompt
from processors.generation.provider import Completion, DeltaSink, LLMProvider, ProviderError, complete_streaming
from processors.generation.resilience import CircuitBreaker, ResilientProvider, RetryPolicy
from processors.records import ChatTurn

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("chatstream.generation")

RETRIEVAL_DOWN = (
    "I'm sorry, I could not look that up in our help center right now, so I can't give you a reliable "
    "answer. Please try again in a few minutes, or ask to talk to a human agent."
)


class Generator:
    """Fills a turn's answer. ``provider`` may be the fallback itself (no LLM configured)."""

    def __init__(
        self,
        provider: LLMProvider,
        fallback: ExtractiveProvider,
        *,
        system_prompt: str,
        prompt_token_budget: int = 3000,
        max_answer_tokens: int = 400,
        turn_budget_s: float = 12.0,
        first_token_s: float = 4.0,
        stall_s: float = 4.0,
    ) -> None:
        if prompt_token_budget <= 0 or max_answer_tokens <= 0:
            raise ValueError("prompt_token_budget and max_answer_tokens must be positive")
        TurnDeadline(budget_s=turn_budget_s, first_token_s=first_token_s, stall_s=stall_s)  # validates
        self.turn_budget_s = turn_budget_s
        self.first_token_s = first_token_s
        self.stall_s = stall_s
        self.provider = provider
        self.fallback = fallback
        self.system_prompt = system_prompt
        self.prompt_token_budget = prompt_token_budget
        self.max_answer_tokens = max_answer_tokens

    async def generate(self, turn: ChatTurn, on_delta: DeltaSink | None = None) -> ChatTurn:
        """The turn with its answer. ``on_delta`` receives the raw answer as it streams (the caller
        redacts before showing anything); without it nothing streams to the caller."""
        started = time.perf_counter()
        if turn.retrieval_ok is False:
            return dataclasses.replace(
                turn,
                answer=RETRIEVAL_DOWN,
                provider="none",
                model="",
                prompt_tokens=0,
                completion_tokens=0,
                llm_latency_ms=0,
                degraded=True,
                generation_error=f"retrieval unavailable: {turn.retrieval_error or 'unknown error'}",
            )
        if not turn.answerable:  # the knowledge base does not cover it: no LLM call, validation declines
            return dataclasses.replace(turn, answer="", provider="none", model="", llm_latency_ms=0, degraded=False)
        prompt = build_prompt(
            system_prompt=self.system_prompt,
            question=turn.request.text,
            summary=turn.summary,
            history=turn.history,
            passages=turn.passages,
            budget_tokens=self.prompt_token_budget,
            current_message_id=turn.request.message_id,
        )
        if prompt.over_budget:
            log.warning(
                "prompt for %s is over budget (%d > %d tokens)", turn.request.message_id, prompt.tokens, prompt.budget
            )
        error: str | None = None
        degraded = False
        completion: Completion | None = None
        shown = False

        def relay(text: str) -> None:
            nonlocal shown
            shown = True
            if on_delta is not None:
                on_delta(text)

        deadline = TurnDeadline(budget_s=self.turn_budget_s, first_token_s=self.first_token_s, stall_s=self.stall_s)
        try:
            if isinstance(self.provider, (FailoverProvider, ResilientProvider)):
                completion = await self.provider.stream(
                    prompt.messages,
                    max_tokens=self.max_answer_tokens,
                    passages=prompt.passages,
                    on_delta=relay,
                    deadline=deadline,
                )
            else:
                completion = await complete_streaming(
                    self.provider, prompt.messages, max_tokens=self.max_answer_tokens, passages=prompt.passages,
                    on_delta=relay,
                )
            if not completion.text.strip():
                error = f"{completion.provider}: empty completion"
                completion = None
        except ProviderError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if completion is None:
            degraded = self.provider is not self.fallback
            with _tracer.start_as_current_span(
                "generate fallback", attributes={"chatstream.llm.provider": self.fallback.name}
            ):
                completion = await self.fallback.complete(
                    prompt.messages, max_tokens=self.max_answer_tokens, passages=prompt.passages
                )
            if not shown and completion.text and on_delta is not None:
                on_delta(completion.text)  # nothing was shown yet: the fallback's answer is the one piece
        return dataclasses.replace(
            turn,
            answer=completion.text,
            provider=completion.provider,
            model=completion.model,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            llm_latency_ms=int((time.perf_counter() - started) * 1000),
            degraded=degraded,
            generation_error=error,
        )

    async def aclose(self) -> None:
        await _aclose(self.provider)


async def _aclose(provider: object) -> None:
    if isinstance(provider, FailoverProvider):
        for p in provider.providers:
            await _aclose(p)
    elif isinstance(provider, ResilientProvider):
        await _aclose(provider.provider)
    elif hasattr(provider, "aclose"):
        await provider.aclose()  # type: ignore[attr-defined]


def _llm_provider(settings, **kw) -> LLMProvider:
    """The lean client over aiohttp by default (``llm_client=aiohttp``), over httpx's own transport
    with ``llm_client=httpx``, the openai SDK with ``llm_client=openai``."""
    if settings.llm_client == "openai":
        return OpenAIProvider(**kw)
    from processors.generation.http_provider import HttpxChatProvider

    if settings.llm_client == "aiohttp":
        from processors.generation.aiohttp_transport import AiohttpTransport

        return HttpxChatProvider(**kw, transport=AiohttpTransport())
    return HttpxChatProvider(**kw)


def build_generator(settings) -> Generator:  # settings: streams.config.Settings (duck-typed: processors never import streams)
    """The generator the settings describe: an OpenAI-compatible chain if an LLM is configured."""
    from processors.secrets import plain_secret as secret

    fallback = ExtractiveProvider()
    api_key = secret(settings.llm_api_key)
    provider: LLMProvider = fallback
    if settings.llm_base_url or api_key:
        chain: list[LLMProvider] = [
            _llm_provider(
                settings,
                base_url=settings.llm_base_url,
                api_key=api_key,
                model=settings.llm_model,
                timeout_s=settings.llm_timeout_s,
            )
        ]
        if settings.llm_secondary_base_url or settings.llm_secondary_model:
            chain.append(
                _llm_provider(
                    settings,
                    base_url=settings.llm_secondary_base_url or settings.llm_base_url,
                    api_key=secret(settings.llm_secondary_api_key) or api_key,
                    model=settings.llm_secondary_model or settings.llm_model,
                    timeout_s=settings.llm_timeout_s,
                    name="openai-secondary",
                )
            )
        provider = FailoverProvider(
            chain,
            policy_factory=lambda: RetryPolicy(
                max_attempts=settings.llm_max_retries + 1,
                base_s=settings.llm_backoff_base_s,
                max_backoff_s=settings.llm_backoff_max_s,
                max_retry_after_s=settings.llm_retry_after_max_s,
                deadline_s=settings.llm_deadline_s,
            ),
            breaker_factory=lambda: CircuitBreaker(
                failure_threshold=settings.circuit_failure_threshold, reset_s=settings.circuit_reset_s
            ),
        )
    return Generator(
        provider,
        fallback,
        system_prompt=settings.system_prompt,
        prompt_token_budget=settings.prompt_token_budget,
        max_answer_tokens=settings.max_answer_tokens,
        turn_budget_s=settings.llm_turn_budget_s,
        first_token_s=settings.llm_first_token_timeout_s,
        stall_s=settings.llm_stream_stall_s,
    )
