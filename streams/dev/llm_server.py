"""A scripted OpenAI-compatible server: the LLM that tests, benchmarks and the demo talk to.

No model runs here (none that answers chat usefully runs offline on these machines, see the field
notes). By default it answers from the passages in the prompt, quoting the sentence of each of the
first passages that best matches the question with its ``[doc_id]``, so demo answers look real and
validation finds them grounded. Everything that makes providers hard is scriptable at run time:

- ``POST /_script`` with any of ``latency_ms``, ``error_rate``, ``error_status``, ``retry_after``,
  ``mode`` (``ok`` | ``429`` | ``500`` | ``503`` | ``hang``), ``answer`` (a fixed reply, null to go
  back to grounded answers), ``fail_next`` (a queue of one-shot outcomes such as
  ``{"status": 429, "retry_after": 1}``, ``{"status": 500}``, ``{"hang": true}``, ``{"latency_ms": 900}``),
  ``embeddings_fail_next`` (the same one-shot outcomes for ``/v1/embeddings`` only, without ``hang``),
  ``reset_stats`` and ``release`` (end all hanging requests); for streamed answers (``stream=true``)
  ``token_ms`` (pause between tokens; ``latency_ms`` is then the time to the first token) and
  ``tokens`` (exactly that many tokens: the answer's words, cycled or cut; 0 = the answer as is);
- ``GET /_stats``: requests by outcome and by endpoint, and the number in flight now.

A hanging request holds its connection open without a byte of response until the client gives up
(its timeout), the script releases it, or the server stops.

Use it from the command line (``chatstream dev llm-server``) or in-process from tests with
``ScriptedLLMServer``, which runs uvicorn in a background thread on a free loopback port.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import json
import logging
import math
import random
import signal
import socket
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from processors.generation.prompt import last_user_content, split_user_message
from processors.generation.provider import estimate_tokens
from processors.generation.text import content_words, split_sentences

log = logging.getLogger(__name__)

MODES = ("ok", "429", "500", "503", "hang")
NO_PASSAGE_ANSWER = "I could not find anything about that in the documents I was given."


@dataclass
class Outcome:
    """What the server does with one chat request."""

    status: int = 200
    retry_after: float | None = None
    hang: bool = False
    latency_ms: float | None = None


@dataclass
class ScriptState:
    """The run-time script; changed by ``POST /_script`` or ``ScriptedLLMServer.script``."""

    model: str = "scripted-llm"
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    retry_after: float | None = 1.0
    mode: str = "ok"
    answer: str | None = None
    embedding_dim: int = 384
    hang_max_s: float = 300.0
    token_ms: float = 0.0
    tokens: int = 0
    fail_next: collections.deque = field(default_factory=collections.deque)
    embeddings_fail_next: collections.deque = field(default_factory=collections.deque)
    seed: int | None = None
    lock: Any = field(default_factory=threading.RLock)  # shared by the HTTP thread and the test thread
    released: threading.Event = field(default_factory=threading.Event)
    stats: collections.Counter = field(default_factory=collections.Counter)
    endpoints: collections.Counter = field(default_factory=collections.Counter)
    in_flight: int = 0
    waiters: set = field(default_factory=set)  # (loop, asyncio.Event) of hanging requests

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        _check_settings(self.latency_ms, self.error_rate, self.mode, self.error_status)

    def update(self, script: dict[str, Any]) -> None:
        """Apply a script; raises ``ValueError`` with a clear message on bad input (nothing applied)."""
        if not isinstance(script, dict):
            raise ValueError("the script must be a JSON object")
        known = {
            "latency_ms", "error_rate", "error_status", "retry_after", "mode", "answer", "fail_next",
            "reset_stats", "release", "model", "embedding_dim", "seed", "hang_max_s", "token_ms", "tokens",
            "embeddings_fail_next",
        }  # fmt: skip
        unknown = set(script) - known
        if unknown:
            raise ValueError(f"unknown script keys: {sorted(unknown)} (known: {sorted(known)})")
        latency = float(script.get("latency_ms", self.latency_ms))
        error_rate = float(script.get("error_rate", self.error_rate))
        mode = str(script.get("mode", self.mode))
        error_status = int(script.get("error_status", self.error_status))
        _check_settings(latency, error_rate, mode, error_status)
        fail_next = [_parse_outcome(o) for o in script.get("fail_next", [])]
        embeddings_fail_next = [_parse_outcome(o) for o in script.get("embeddings_fail_next", [])]
        if any(o.hang for o in embeddings_fail_next):
            raise ValueError("embeddings_fail_next does not hang; use status and latency_ms")
        embedding_dim = int(script.get("embedding_dim", self.embedding_dim))
        if embedding_dim < 1 or embedding_dim > 8192:
            raise ValueError("embedding_dim must be in 1..8192")
        token_ms = float(script.get("token_ms", self.token_ms))
        tokens = int(script.get("tokens", self.tokens))
        if token_ms < 0 or tokens < 0:
            raise ValueError("token_ms and tokens must not be negative")
        answer = script.get("answer", self.answer)
        if answer is not None and not isinstance(answer, str):
            raise ValueError("answer must be a string or null")
        with self.lock:
            self.latency_ms, self.error_rate, self.mode, self.error_status = latency, error_rate, mode, error_status
            self.answer = answer
            self.embedding_dim = embedding_dim
            self.token_ms, self.tokens = token_ms, tokens
            if "retry_after" in script:
                self.retry_after = None if script["retry_after"] is None else float(script["retry_after"])
            if "model" in script:
                self.model = str(script["model"])
            if "hang_max_s" in script:
                self.hang_max_s = float(script["hang_max_s"])
            if "seed" in script:
                self._rng = random.Random(script["seed"])
            self.fail_next.extend(fail_next)
            self.embeddings_fail_next.extend(embeddings_fail_next)
            if script.get("reset_stats"):
                self.stats.clear()
                self.endpoints.clear()
            if script.get("release"):
                self.release()
            elif mode == "hang" or any(o.hang for o in fail_next):
                self.released.clear()

    def release(self) -> None:
        """End every hanging request now (callable from any thread)."""
        with self.lock:
            self.released.set()
            waiters = list(self.waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: its request is gone anyway
                pass

    def next_outcome(self) -> Outcome:
        with self.lock:
            if self.fail_next:
                return self.fail_next.popleft()
            latency = self.latency_ms
            if self.mode == "hang":
                return Outcome(hang=True)
            if self.mode in ("429", "500", "503"):
                status = int(self.mode)
                retry_after = self.retry_after if status == 429 else None
                return Outcome(status=status, retry_after=retry_after, latency_ms=latency)
            if self.error_rate and self._rng.random() < self.error_rate:
                return Outcome(
                    status=self.error_status,
                    retry_after=self.retry_after if self.error_status == 429 else None,
                    latency_ms=latency,
                )
            return Outcome(latency_ms=latency)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "total": sum(self.endpoints.values()),
                "by_outcome": dict(self.stats),
                "by_endpoint": dict(self.endpoints),
                "in_flight": self.in_flight,
                "script": {
                    "model": self.model,
                    "latency_ms": self.latency_ms,
                    "error_rate": self.error_rate,
                    "error_status": self.error_status,
                    "retry_after": self.retry_after,
                    "mode": self.mode,
                    "answer": self.answer,
                    "fail_next": len(self.fail_next),
                    "embeddings_fail_next": len(self.embeddings_fail_next),
                    "embedding_dim": self.embedding_dim,
                    "token_ms": self.token_ms,
                    "tokens": self.tokens,
                },
            }

    def count(self, endpoint: str, outcome: str | None = None) -> None:
        with self.lock:
            self.endpoints[endpoint] += 1
            if outcome is not None:
                self.stats[outcome] += 1


def _check_settings(latency_ms: float, error_rate: float, mode: str, error_status: int) -> None:
    if latency_ms < 0:
        raise ValueError("latency_ms must not be negative")
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError("error_rate must be between 0 and 1")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    if not 400 <= error_status <= 599:
        raise ValueError("error_status must be an HTTP error status (400..599)")


def _parse_outcome(raw: Any) -> Outcome:
    if not isinstance(raw, dict):
        raise ValueError(f"fail_next entries must be objects, got {raw!r}")
    unknown = set(raw) - {"status", "retry_after", "hang", "latency_ms"}
    if unknown:
        raise ValueError(f"unknown fail_next keys: {sorted(unknown)}")
    status = int(raw.get("status", 200))
    if not (status == 200 or 400 <= status <= 599):
        raise ValueError("fail_next status must be 200 or 400..599")
    retry_after = raw.get("retry_after")
    latency = raw.get("latency_ms")
    return Outcome(
        status=status,
        retry_after=None if retry_after is None else float(retry_after),
        hang=bool(raw.get("hang", False)),
        latency_ms=None if latency is None else float(latency),
    )


# --- answers ---------------------------------------------------------------------------------------


def grounded_answer(messages: list[dict], *, max_passages: int = 2) -> str:
    """Quote, for each of the first passages, its sentence closest to the question, with ``[doc_id]``."""
    passages, question = split_user_message(last_user_content(messages))
    if not passages:
        return NO_PASSAGE_ANSWER
    wanted = set(content_words(question))
    parts = []
    for passage in passages[:max_passages]:
        sentences = [s for s in split_sentences(passage.text) if content_words(s)] or [passage.text]
        best = max(enumerate(sentences), key=lambda s: (len(wanted & set(content_words(s[1]))), -s[0]))[1]
        parts.append(f"{best.strip().rstrip('.!?;:').rstrip()} [{passage.doc_id}].")
    return " ".join(parts)


def hash_embedding(text: str, dim: int) -> list[float]:
    """A deterministic unit vector from hashed words (feature hashing with signs).

    Texts that share words get similar vectors, which is all a test double for the embeddings API
    needs; the real embedding model lives in the retrieval stage.
    """
    vec = [0.0] * dim
    tokens = content_words(text) or [text.strip().lower()]
    for token in tokens:
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "little") % dim
        vec[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:
        vec[0], norm = 1.0, 1.0
    return [v / norm for v in vec]


# --- HTTP ------------------------------------------------------------------------------------------


def _error(status: int, message: str, *, retry_after: float | None = None) -> JSONResponse:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        429: "rate_limit_exceeded",
    }.get(status, "server_error")
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": str(status)}},
        status_code=status,
        headers=headers,
    )


async def _read_json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def create_app(state: ScriptState) -> Starlette:
    async def hang(request: Request) -> None:
        """Hold the request until released, the client goes away, or ``hang_max_s`` passes.

        Wakes twice a second at most (not a busy poll), so hundreds of abandoned hanging requests
        during a fault-injection run cost next to nothing.
        """
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with state.lock:
            state.waiters.add(waiter)
        try:
            deadline = time.monotonic() + state.hang_max_s
            while not state.released.is_set() and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(event.wait(), timeout=0.5)
                    return
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
        finally:
            with state.lock:
                state.waiters.discard(waiter)

    async def chat_completions(request: Request) -> Response:
        try:
            body = await _read_json(request)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise ValueError("messages must be a non-empty list of objects")
        except ValueError as exc:
            state.count("chat", "400")
            return _error(400, str(exc))
        outcome = state.next_outcome()
        with state.lock:
            state.in_flight += 1
        try:
            if outcome.hang:
                state.count("chat", "hang")
                await hang(request)
                return _error(503, "released after hanging")
            if outcome.latency_ms:
                await asyncio.sleep(outcome.latency_ms / 1000.0)
            if outcome.status != 200:
                state.count("chat", str(outcome.status))
                return _error(outcome.status, f"scripted failure {outcome.status}", retry_after=outcome.retry_after)
            model = str(body.get("model") or state.model)
            text = state.answer if state.answer is not None else grounded_answer(messages)
            max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
            finish = "stop"
            if isinstance(max_tokens, int) and max_tokens > 0 and estimate_tokens(text) > max_tokens:
                text, finish = text[: max_tokens * 4], "length"
            usage = {
                "prompt_tokens": sum(estimate_tokens(str(m.get("content") or "")) for m in messages),
                "completion_tokens": estimate_tokens(text),
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
            created = int(time.time())
            if body.get("stream"):
                state.count("chat", "ok_stream")
                with state.lock:
                    token_s, count = state.token_ms / 1000.0, state.tokens
                return StreamingResponse(
                    _sse(completion_id, created, model, text, finish, usage, token_s=token_s, tokens=count),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache"},
                )
            state.count("chat", "ok")
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": finish,
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                }
            )
        finally:
            with state.lock:
                state.in_flight -= 1

    async def embeddings(request: Request) -> Response:
        try:
            body = await _read_json(request)
            raw = body.get("input")
            inputs = [raw] if isinstance(raw, str) else raw
            if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
                raise ValueError("input must be a string or a non-empty list of strings")
            dim = int(body.get("dimensions") or state.embedding_dim)
            if dim < 1 or dim > 8192:
                raise ValueError("dimensions must be in 1..8192")
            encoding = body.get("encoding_format") or "float"
            if encoding not in ("float", "base64"):
                raise ValueError("encoding_format must be float or base64")
        except (ValueError, TypeError) as exc:
            state.count("embeddings", "400")
            return _error(400, str(exc))
        with state.lock:
            outcome = state.embeddings_fail_next.popleft() if state.embeddings_fail_next else None
        if outcome is not None:
            if outcome.latency_ms:
                await asyncio.sleep(outcome.latency_ms / 1000.0)
            if outcome.status != 200:
                state.count("embeddings", str(outcome.status))
                return _error(outcome.status, f"scripted failure {outcome.status}", retry_after=outcome.retry_after)
        state.count("embeddings")
        data = []
        for index, text in enumerate(inputs):
            vector = hash_embedding(text, dim)
            embedding: Any = vector
            if encoding == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(estimate_tokens(t) for t in inputs)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": str(body.get("model") or "scripted-embedding"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def models(request: Request) -> Response:
        state.count("models")
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": state.model, "object": "model", "created": 0, "owned_by": "chatstream-dev"}],
            }
        )

    async def script(request: Request) -> Response:
        try:
            state.update(await _read_json(request))
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        return JSONResponse(state.snapshot())

    async def stats(request: Request) -> Response:
        return JSONResponse(state.snapshot())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_script", script, methods=["POST"]),
            Route("/_stats", stats, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def stream_pieces(text: str, tokens: int = 0) -> list[str]:
    """The answer as streamed: one piece per word (with its leading space); ``tokens`` > 0 gives
    exactly that many pieces, cycling the words (or cutting them) so timing scripts are exact."""
    words = text.split(" ")
    if tokens > 0:
        words = [words[i % len(words)] for i in range(tokens)]
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


async def _sse(
    completion_id: str,
    created: int,
    model: str,
    text: str,
    finish: str,
    usage: dict[str, int],
    *,
    token_s: float = 0.0,
    tokens: int = 0,
) -> AsyncIterator[bytes]:
    def chunk(choices: list[dict], **extra: Any) -> bytes:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n".encode()

    yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    for i, content in enumerate(stream_pieces(text, tokens)):
        if i and token_s:
            await asyncio.sleep(token_s)
        yield chunk([{"index": 0, "delta": {"content": content}, "finish_reason": None}])
    yield chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
    yield chunk([], usage=usage)
    yield b"data: [DONE]\n\n"


# --- running it ------------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when it
    # is, and without it Nagle meets delayed ACKs and every response waits ~40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        backlog=4096,
    )


def serve(host: str, port: int, state: ScriptState) -> None:
    """Run in the foreground until SIGINT/SIGTERM (the CLI command).

    uvicorn re-raises the signal it caught once it has shut down; a no-op SIGTERM handler makes
    that a clean exit (status 0) instead of death by signal, so scripts can tell a crash apart.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server = uvicorn.Server(_uvicorn_config(create_app(state), host, port))
    try:
        server.run()
    finally:
        state.release()


class ScriptedLLMServer:
    """The scripted server on a background thread, for tests: ``with ScriptedLLMServer() as llm:``.

    ``port=0`` picks a free port. ``base_url`` is what an OpenAI client needs (ends in ``/v1``).
    ``script(...)`` changes the behaviour directly (same keys as ``POST /_script``); ``stats()``
    returns what ``GET /_stats`` returns.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **script: Any) -> None:
        self.host = host
        self.state = ScriptState()
        if script:
            self.state.update(script)
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def script(self, **script: Any) -> dict[str, Any]:
        self.state.update(script)
        return self.state.snapshot()

    def stats(self) -> dict[str, Any]:
        return self.state.snapshot()

    def start_sync(self, timeout_s: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        self._sock = _bind(self.host, self._requested_port)
        self.port = self._sock.getsockname()[1]
        self.state.released.clear()
        self._server = uvicorn.Server(_uvicorn_config(create_app(self.state), self.host, self.port))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name=f"scripted-llm-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop_sync()
                raise RuntimeError(f"the scripted LLM server did not start on {self.url}")
            time.sleep(0.01)

    def stop_sync(self, timeout_s: float = 10.0) -> None:
        self.state.release()  # let hanging requests end so shutdown is quick
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    def __enter__(self) -> "ScriptedLLMServer":
        self.start_sync()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_sync()

    async def __aenter__(self) -> "ScriptedLLMServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
