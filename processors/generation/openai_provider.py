"""Chat completions through the openai SDK, against OpenAI or any compatible server.

``base_url`` points it at vLLM, Ollama, llama.cpp's server, Azure OpenAI's v1 endpoint or the
scripted dev server. The SDK's own retries are off (``max_retries=0``): retry, backoff and the
circuit breaker are ours (``resilience``) so that every attempt is visible, bounded and counted
by the breaker. This module only maps the SDK's outcomes to ``Completion`` and our error classes.
"""

from __future__ import annotations

import email.utils
import time

import openai

from processors.generation.provider import (
    Completion,
    DeltaSink,
    PermanentError,
    ProviderError,
    RetryableError,
    estimate_tokens,
)
from processors.records import Passage

# Statuses where the same request may succeed later.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
PLACEHOLDER_API_KEY = "unused"  # local OpenAI-compatible servers usually accept any key


def parse_retry_after(headers: object, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    raw_ms = get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class OpenAIProvider:
    """One model behind one OpenAI-compatible endpoint."""

    system = "openai"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str,
        timeout_s: float = 20.0,
        name: str = "openai",
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        if not model:
            raise ValueError("model is required")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.name = name
        self.model = model
        self.timeout_s = timeout_s
        self.base_url = base_url
        self._client = client or openai.AsyncOpenAI(
            base_url=base_url or None,
            # Never let the SDK fall back to OPENAI_API_KEY behind the settings object's back.
            api_key=api_key or PLACEHOLDER_API_KEY,
            max_retries=0,
            timeout=timeout_s,
        )

    async def complete(self, messages: list[dict], *, max_tokens: int, passages: list[Passage]) -> Completion:
        started = time.perf_counter()
        try:
            response = await self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_tokens, timeout=self.timeout_s
            )
        except openai.APIError as exc:
            raise self._map_error(exc) from exc
        latency_ms = int((time.perf_counter() - started) * 1000)
        if not response.choices:
            raise RetryableError("the response has no choices", provider=self.name)
        text = (response.choices[0].message.content or "").strip()
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage and usage.prompt_tokens is not None else None
        completion_tokens = usage.completion_tokens if usage and usage.completion_tokens is not None else None
        return Completion(
            text=text,
            model=response.model or self.model,
            provider=self.name,
            prompt_tokens=prompt_tokens
            if prompt_tokens is not None
            else sum(estimate_tokens(str(m.get("content") or "")) for m in messages),
            completion_tokens=completion_tokens if completion_tokens is not None else estimate_tokens(text),
            latency_ms=latency_ms,
        )

    async def stream(
        self, messages: list[dict], *, max_tokens: int, passages: list[Passage], on_delta: DeltaSink
    ) -> Completion:
        """``stream=true`` through the SDK: each content delta to ``on_delta``, usage from the last chunk."""
        started = time.perf_counter()
        parts: list[str] = []
        model, usage, first = None, None, None
        try:
            chunks = await self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=max_tokens,
                timeout=self.timeout_s,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in chunks:
                model = chunk.model or model
                usage = chunk.usage or usage
                for choice in chunk.choices or ():
                    piece = choice.delta.content if choice.delta else None
                    if piece:
                        first = first or time.perf_counter()
                        parts.append(piece)
                        on_delta(piece)
        except openai.APIError as exc:
            raise self._map_error(exc) from exc
        text = "".join(parts).strip()
        if not parts:
            raise RetryableError("the stream ended without an answer", provider=self.name)
        return Completion(
            text=text,
            model=model or self.model,
            provider=self.name,
            prompt_tokens=usage.prompt_tokens
            if usage and usage.prompt_tokens is not None
            else sum(estimate_tokens(str(m.get("content") or "")) for m in messages),
            completion_tokens=usage.completion_tokens
            if usage and usage.completion_tokens is not None
            else estimate_tokens(text),
            latency_ms=int((time.perf_counter() - started) * 1000),
            ttft_ms=None if first is None else int((first - started) * 1000),
        )

    def _map_error(self, exc: openai.APIError) -> ProviderError:
        if isinstance(exc, openai.APITimeoutError):
            return RetryableError(f"timed out after {self.timeout_s:g}s", provider=self.name)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            detail = f": {type(cause).__name__}: {cause}" if cause else ""
            return RetryableError(f"connection error{detail}", provider=self.name)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = f"HTTP {status}: {_short(exc.message)}"
            if isinstance(exc, openai.RateLimitError) or status in RETRYABLE_STATUSES:
                return RetryableError(
                    message, retry_after=parse_retry_after(exc.response.headers), provider=self.name, status=status
                )
            return PermanentError(message, provider=self.name, status=status)
        if isinstance(exc, openai.APIResponseValidationError):
            return PermanentError(f"malformed response: {_short(str(exc))}", provider=self.name)
        return PermanentError(f"{type(exc).__name__}: {_short(str(exc))}", provider=self.name)

    async def aclose(self) -> None:
        await self._client.close()


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
