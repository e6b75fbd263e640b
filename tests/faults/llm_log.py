"""Which turn each LLM call was for, and when it started and ended: the scripted LLM's request log.

The scripted server counts calls but does not know turns. Fault questions carry their message id
(``ref <id>``, see ``outcomes.conversation``), so an ASGI wrapper around the server's app reads the
last user message of every chat request and logs (message id, start, end, HTTP status). That tells
a shutdown test which turns were in the LLM when SIGTERM came, and counts LLM calls per message id
instead of as a net total. Test-side only: it wraps ``streams.dev.llm_server.create_app``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from processors.generation.prompt import last_user_content, split_user_message

REF = re.compile(r"\(ref ([0-9a-f-]{36})\)")


@dataclass
class Call:
    message_id: str | None
    started: float  # time.monotonic()
    ended: float | None = None
    status: int | None = None


class RequestLog:
    """Chat requests seen by the server, in arrival order; thread-safe (the server runs in a thread)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def open_at(self, moment: float) -> set[str]:
        """Message ids whose LLM call had started and not yet ended at ``moment`` (monotonic)."""
        with self._lock:
            return {
                c.message_id
                for c in self.calls
                if c.message_id and c.started <= moment and (c.ended is None or c.ended > moment)
            }

    def generating_at(self, moment: float, answered: set[str]) -> set[str]:
        """Turns mid-pipeline at ``moment``: their LLM call had started, their reply was not out yet."""
        with self._lock:
            return {c.message_id for c in self.calls if c.message_id and c.started <= moment} - answered

    def started_before(self, moment: float) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.started < moment]

    def per_message(self) -> Counter:
        with self._lock:
            return Counter(c.message_id for c in self.calls if c.message_id)

    def describe(self, message_id: str, sigterm_at: float, exited_at: float) -> str:
        """A turn's calls relative to two moments, for failure messages."""

        def at(t: float | None) -> str:
            if t is None:
                return "open"
            return f"{t - sigterm_at:+.2f} s" + (" (after exit)" if t > exited_at else "")

        with self._lock:
            calls = [c for c in self.calls if c.message_id == message_id]
        return ", ".join(f"call {at(c.started)}..{at(c.ended)} -> {c.status}" for c in calls) + " from SIGTERM"

    def wrap(self, app: Any) -> Any:
        """The ASGI app logging every ``/chat/completions`` request, then passing it on unchanged."""

        async def logged(scope: dict, receive: Any, send: Any) -> None:
            if scope.get("type") != "http" or not scope.get("path", "").endswith("/chat/completions"):
                await app(scope, receive, send)
                return
            chunks, more = [], True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(chunks)
            call = Call(message_id=_message_id(body), started=time.monotonic())
            with self._lock:
                self.calls.append(call)
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            async def sending(message: dict) -> None:
                if message["type"] == "http.response.start":
                    call.status = message["status"]
                await send(message)

            try:
                await app(scope, replay, sending)
            finally:
                call.ended = time.monotonic()

        return logged


def _message_id(body: bytes) -> str | None:
    try:
        messages = json.loads(body).get("messages") or []
        _, question = split_user_message(last_user_content(messages))
    except (ValueError, AttributeError):
        return None
    found = REF.search(question)
    return found.group(1) if found else None
