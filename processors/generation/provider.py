"""The contract between the generate stage and whatever produces an answer.

Like httpx's transports under its client, a provider only knows how to turn messages into one
completion; retries, the circuit breaker, failover and the fallback live above it
(``resilience``, ``failover``, ``generator``), so a new backend is one small class. Providers speak
in our error classes, never in SDK exceptions, so the policy layer can decide what to retry
without knowing which SDK raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from processors.records import Passage


@dataclass
class Completion:
    """One answer and what it cost."""

    text: str
    model: str
    provider: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    ttft_ms: int | None = None  # time to the first streamed token of the attempt that answered


# Receives each new piece of text as a provider streams it (called on the event loop, must not block).
DeltaSink = Callable[[str], None]


@runtime_checkable
class LLMProvider(Protocol):
    """Anything that answers chat messages; ``passages`` lets non-LLM providers answer too."""

    name: str

    async def complete(self, messages: list[dict], *, max_tokens: int, passages: list[Passage]) -> Completion: ...


@runtime_checkable
class StreamingProvider(Protocol):
    """A provider that can hand out its answer piece by piece (OpenAI-compatible ``stream=true``).

    ``stream`` calls ``on_delta`` for every new piece and returns the whole ``Completion`` at the
    end, so the policy layers above keep one result type whether a provider streams or not.
    """

    name: str

    async def stream(
        self, messages: list[dict], *, max_tokens: int, passages: list[Passage], on_delta: DeltaSink
    ) -> Completion: ...


async def complete_streaming(
    provider: LLMProvider, messages: list[dict], *, max_tokens: int, passages: list[Passage], on_delta: DeltaSink
) -> Completion:
    """Stream when the provider can; otherwise its whole answer is one delta (extractive, plain providers)."""
    if isinstance(provider, StreamingProvider):
        return await provider.stream(messages, max_tokens=max_tokens, passages=passages, on_delta=on_delta)
    completion = await provider.complete(messages, max_tokens=max_tokens, passages=passages)
    if completion.text:
        on_delta(completion.text)
    return completion


class ProviderError(Exception):
    """A provider could not answer. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, provider: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status


class RetryableError(ProviderError):
    """Worth trying again: 429, 5xx, timeouts, connection errors.

    ``retry_after`` is the server's own hint in seconds (``Retry-After``), when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        provider: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after


class PermanentError(ProviderError):
    """Trying again gives the same answer: 400, 401, 403, 404, 422, a malformed response."""


class CircuitOpenError(ProviderError):
    """The provider's circuit breaker is open; no call was made (or a waiting call was abandoned)."""


class FirstTokenTimeout(RetryableError):
    """No first token within the first-token deadline: the provider is taken as hung for this turn
    (not retried on the same provider; failover or the fallback answers)."""


class StreamBroken(ProviderError):
    """The provider failed after part of its answer was already shown: neither a retry nor another
    provider may continue that text, so the turn goes straight to the fallback (the final reply
    replaces the provisional text)."""


class AllProvidersFailedError(ProviderError):
    """Every provider of a failover chain failed or had its circuit open; ``errors`` says how."""

    def __init__(self, errors: list[ProviderError]) -> None:
        detail = "; ".join(f"{e.provider or '?'}: {type(e).__name__}: {e}" for e in errors) or "no providers"
        super().__init__(f"all providers failed ({detail})", provider="failover")
        self.errors = errors

    @property
    def circuit_open(self) -> bool:
        """True when no provider was even tried because every circuit was open."""
        return bool(self.errors) and all(isinstance(e, CircuitOpenError) for e in self.errors)


def estimate_tokens(text: str) -> int:
    """Approximate token count: one token per four characters, rounded up.

    Why characters and not words: OpenAI's rule of thumb for English is ~4 characters per token,
    it needs no tokenizer (none is available offline for every model a base_url may serve), and
    it over-counts rather than under-counts on code, ids and numbers, which keeps prompts inside
    the budget. The true count comes back in ``usage`` from the server and is what we record.
    """
    return (len(text) + 3) // 4
