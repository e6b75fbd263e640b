"""OpenAI-compatible chat completions over a lean httpx transport (the default client).

Why not the openai SDK on the hot path: the perf issue measured the SDK at 3.4-3.8 ms of client CPU
per call (pydantic models for every response, its own retry and header machinery) against 0.7 ms on
the server. Here one ``httpx.Request`` goes straight to an httpx transport's one method,
``handle_async_request`` (httpx's own transport layer: connection pooling, HTTP/1.1, timeouts), and
the JSON or the server-sent events come back as plain dicts. Anything with that one method can
stand in (``httpx.MockTransport``, a proxy transport). The SDK provider (``openai_provider``) stays
available with ``CHATSTREAM_LLM_CLIENT=openai``.

Both ``complete`` and ``stream`` (``stream=true``, ``stream_options.include_usage``) map outcomes to
``Completion`` and our error classes exactly as the SDK provider does.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

import httpx

from processors.generation.openai_provider import PLACEHOLDER_API_KEY, RETRYABLE_STATUSES, _short, parse_retry_after
from processors.generation.provider import (
    Completion,
    DeltaSink,
    PermanentError,
    ProviderError,
    RetryableError,
    estimate_tokens,
)
from processors.records import Passage


class ChatTransport(Protocol):
    """httpx's transport interface: one request in, one (streamable) response out."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response: ...

    async def aclose(self) -> None: ...


class HttpxChatProvider:
    """One model behind one OpenAI-compatible endpoint, spoken to through ``ChatTransport``."""

    system = "openai"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str,
        timeout_s: float = 20.0,
        name: str = "openai",
        transport: ChatTransport | None = None,
        max_connections: int = 256,
    ) -> None:
        if not model:
            raise ValueError("model is required")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.name = name
        self.model = model
        self.timeout_s = timeout_s
        self.base_url = (base_url or "https://api.openai.com/v1").rstrip("/")
        self._url = httpx.URL(self.base_url + "/chat/completions")
        self._headers = [
            (b"Host", self._url.netloc),
            (b"Authorization", f"Bearer {api_key or PLACEHOLDER_API_KEY}".encode()),
            (b"Content-Type", b"application/json"),
            (b"Accept", b"application/json, text/event-stream"),
        ]
        self._timeout = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
        self._transport: ChatTransport = transport or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        )

    def _request(self, body: dict[str, Any]) -> httpx.Request:
        content = json.dumps(body, separators=(",", ":")).encode()
        headers = self._headers + [(b"Content-Length", str(len(content)).encode())]
        return httpx.Request("POST", self._url, headers=headers, content=content, extensions={"timeout": self._timeout})

    async def _send(self, body: dict[str, Any]) -> httpx.Response:
        try:
            response = await self._transport.handle_async_request(self._request(body))
        except httpx.TimeoutException:
            raise RetryableError(f"timed out after {self.timeout_s:g}s", provider=self.name) from None
        except httpx.TransportError as exc:
            raise RetryableError(f"connection error: {type(exc).__name__}: {exc}", provider=self.name) from exc
        if response.status_code != 200:
            try:
                detail = (await response.aread()).decode("utf-8", "replace")
            except httpx.HTTPError:
                detail = ""
            finally:
                await response.aclose()
            raise self._status_error(response, detail)
        return response

    def _status_error(self, response: httpx.Response, detail: str) -> ProviderError:
        status = response.status_code
        try:
            detail = json.loads(detail)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        message = f"HTTP {status}: {_short(str(detail))}"
        if status in RETRYABLE_STATUSES:
            return RetryableError(
                message, retry_after=parse_retry_after(response.headers), provider=self.name, status=status
            )
        return PermanentError(message, provider=self.name, status=status)

    def _completion(self, text: str, model: str | None, usage: dict | None, messages: list[dict], started: float,
                    ttft: float | None = None) -> Completion:
        usage = usage or {}
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        return Completion(
            text=text,
            model=model or self.model,
            provider=self.name,
            prompt_tokens=prompt_tokens
            if isinstance(prompt_tokens, int)
            else sum(estimate_tokens(str(m.get("content") or "")) for m in messages),
            completion_tokens=completion_tokens if isinstance(completion_tokens, int) else estimate_tokens(text),
            latency_ms=int((time.perf_counter() - started) * 1000),
            ttft_ms=None if ttft is None else int((ttft - started) * 1000),
        )

    async def complete(self, messages: list[dict], *, max_tokens: int, passages: list[Passage]) -> Completion:
        started = time.perf_counter()
        response = await self._send({"model": self.model, "messages": messages, "max_tokens": max_tokens})
        try:
            raw = await response.aread()
        except httpx.TimeoutException:
            raise RetryableError(f"timed out after {self.timeout_s:g}s", provider=self.name) from None
        except httpx.TransportError as exc:
            raise RetryableError(f"connection error: {type(exc).__name__}: {exc}", provider=self.name) from exc
        finally:
            await response.aclose()
        try:
            data = json.loads(raw)
            choices = data["choices"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(f"malformed response: {_short(raw.decode('utf-8', 'replace'))}", provider=self.name) from exc
        if not choices:
            raise RetryableError("the response has no choices", provider=self.name)
        text = ((choices[0].get("message") or {}).get("content") or "").strip()
        return self._completion(text, data.get("model"), data.get("usage"), messages, started)

    async def stream(
        self, messages: list[dict], *, max_tokens: int, passages: list[Passage], on_delta: DeltaSink
    ) -> Completion:
        started = time.perf_counter()
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        response = await self._send(body)
        parts: list[str] = []
        model: str | None = None
        usage: dict | None = None
        first: float | None = None
        done = False
        try:
            async for line in _sse_data_lines(response):
                if line == b"[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(line)
                except ValueError as exc:
                    raise PermanentError(f"malformed stream chunk: {_short(line.decode('utf-8', 'replace'))}",
                                         provider=self.name) from exc
                if "error" in chunk:
                    raise RetryableError(f"error in stream: {_short(str(chunk['error']))}", provider=self.name)
                model = chunk.get("model") or model
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        if first is None:
                            first = time.perf_counter()
                        parts.append(piece)
                        on_delta(piece)
        except httpx.TimeoutException:
            raise RetryableError(f"stream read timed out after {self.timeout_s:g}s", provider=self.name) from None
        except httpx.TransportError as exc:
            raise RetryableError(f"stream broken: {type(exc).__name__}: {exc}", provider=self.name) from exc
        finally:
            await response.aclose()
        if not done and not parts:
            raise RetryableError("the stream ended without an answer", provider=self.name)
        return self._completion("".join(parts).strip(), model, usage, messages, started, first)

    async def aclose(self) -> None:
        await self._transport.aclose()


async def _sse_data_lines(response: httpx.Response):
    """The ``data:`` payloads of a server-sent event stream (one JSON chunk each for OpenAI)."""
    buffer = b""
    async for raw in response.aiter_raw():
        buffer += raw
        while True:
            cut = buffer.find(b"\n")
            if cut < 0:
                break
            line, buffer = buffer[:cut].rstrip(b"\r"), buffer[cut + 1 :]
            if line.startswith(b"data:"):
                yield line[5:].strip()
    if buffer.startswith(b"data:"):
        yield buffer[5:].strip()
