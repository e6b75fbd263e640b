"""Primary, then secondary: the first provider that answers wins.

Each provider gets its own retry policy and circuit breaker, so a primary that is down costs one
fast ``CircuitOpenError`` per turn instead of a full retry cycle, and the secondary's health is
judged on its own. When every provider fails (or every circuit is open) ``AllProvidersFailedError``
is raised and the generator falls back to the extractive answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from processors.generation.deadline import TurnDeadline
from processors.generation.provider import (
    AllProvidersFailedError,
    Completion,
    DeltaSink,
    LLMProvider,
    ProviderError,
    StreamBroken,
)
from processors.generation.resilience import CircuitBreaker, ResilientProvider, RetryPolicy
from processors.records import Passage

log = logging.getLogger(__name__)


class FailoverProvider:
    """Tries providers in order; wraps plain providers in a ``ResilientProvider`` of their own."""

    def __init__(
        self,
        providers: Sequence[LLMProvider],
        *,
        policy_factory: Callable[[], RetryPolicy] = RetryPolicy,
        breaker_factory: Callable[[], CircuitBreaker] = CircuitBreaker,
    ) -> None:
        if not providers:
            raise ValueError("at least one provider is required")
        self.providers: list[ResilientProvider] = [
            p
            if isinstance(p, ResilientProvider)
            else ResilientProvider(p, policy=policy_factory(), breaker=breaker_factory())
            for p in providers
        ]
        names = [p.name for p in self.providers]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique, got {names}")
        self.name = "failover(" + ",".join(names) + ")"
        self.model = self.providers[0].model

    async def complete(self, messages: list[dict], *, max_tokens: int, passages: list[Passage]) -> Completion:
        errors: list[ProviderError] = []
        for provider in self.providers:
            try:
                return await provider.complete(messages, max_tokens=max_tokens, passages=passages)
            except ProviderError as exc:
                if not exc.provider:
                    exc.provider = provider.name
                errors.append(exc)
                log.warning("provider %s failed: %s: %s", provider.name, type(exc).__name__, exc)
        raise AllProvidersFailedError(errors)

    async def stream(
        self,
        messages: list[dict],
        *,
        max_tokens: int,
        passages: list[Passage],
        on_delta: DeltaSink,
        deadline: TurnDeadline | None = None,
    ) -> Completion:
        """Like ``complete``, streaming, all providers inside one turn ``deadline``.

        The next provider is tried only while the budget lasts and no text was shown yet.
        """
        deadline = deadline or TurnDeadline()
        errors: list[ProviderError] = []
        for provider in self.providers:
            if errors and deadline.remaining() <= 0:
                break
            try:
                return await provider.stream(
                    messages, max_tokens=max_tokens, passages=passages, on_delta=on_delta, deadline=deadline
                )
            except ProviderError as exc:
                if not exc.provider:
                    exc.provider = provider.name
                errors.append(exc)
                log.warning("provider %s failed: %s: %s", provider.name, type(exc).__name__, exc)
                if isinstance(exc, StreamBroken):
                    break
        raise AllProvidersFailedError(errors)
