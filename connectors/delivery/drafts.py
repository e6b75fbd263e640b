"""Provisional answers on channels that can edit a sent message (Slack, Teams).

While a turn is generated, its ``ChatDelta`` pieces arrive on chat.deltas. For a channel whose
client can edit (``EditableClient``) the first piece with text posts a placeholder message, later
pieces update it in place at most once per ``min_interval_s`` per message (Slack asks for about one
update per second per message; chat.update is a Tier 3 method), and the final ``ChatResponse``
from chat.outbound replaces it with the authoritative text (redacted, BLOCKED or ESCALATED wording,
citations) instead of posting a second message. Channels that cannot edit (WhatsApp) only ever get
the final reply.

Drafts are best effort: a failed post or update is logged and counted, never retried or
dead-lettered (the final reply is, as before). A per-message lock orders pieces against the final
reply within this process; the placeholder's address is also kept in Redis (``draft:{message_id}``)
so the final reply edits it even if another deliver process posted it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from processors.records import ChatDelta, ChatResponse

log = logging.getLogger("chatstream.deliver.drafts")


@runtime_checkable
class EditableClient(Protocol):
    channel: str

    async def post_draft(self, delta: ChatDelta, text: str) -> dict[str, str]: ...

    async def update_draft(self, handle: dict[str, str], delta: ChatDelta, text: str) -> None: ...

    async def finish_draft(self, handle: dict[str, str], resp: ChatResponse) -> dict[str, str]: ...


def draft_key(message_id: str) -> str:
    return f"draft:{message_id}"


@dataclass
class Draft:
    text: str = ""
    seq: int = -1
    handle: dict[str, str] | None = None
    updated_at: float = 0.0
    shown: str = ""


class Drafts:
    def __init__(
        self, redis: Any, *, min_interval_s: float = 1.0, ttl_s: int = 3600, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.redis = redis
        self.min_interval_s = min_interval_s
        self.ttl_s = ttl_s
        self.clock = clock
        self._drafts: dict[str, Draft] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._finished: dict[str, None] = {}  # insertion-ordered, bounded

    def lock(self, message_id: str) -> asyncio.Lock:
        return self._locks.setdefault(message_id, asyncio.Lock())

    def finished(self, message_id: str) -> bool:
        return message_id in self._finished

    async def on_delta(self, client: EditableClient, delta: ChatDelta, already_delivered) -> str:
        """Post or update the placeholder; returns the outcome (for counting and tests)."""
        mid = delta.message_id
        async with self.lock(mid):
            if mid in self._finished:
                return "draft_after_final"
            draft = self._drafts.setdefault(mid, Draft())
            if delta.seq <= draft.seq:
                return "draft_repeat"
            draft.text += delta.text
            draft.seq = delta.seq
            if not draft.text.strip():
                return "draft_empty"
            if draft.handle is None:
                if await already_delivered():
                    self._finish(mid)
                    return "draft_after_final"
                draft.handle = await client.post_draft(delta, draft.text)
                draft.shown, draft.updated_at = draft.text, self.clock()
                await self.redis.set(draft_key(mid), json.dumps(draft.handle), ex=self.ttl_s)
                return "draft_posted"
            if draft.text != draft.shown and self.clock() - draft.updated_at >= self.min_interval_s:
                await client.update_draft(draft.handle, delta, draft.text)
                draft.shown, draft.updated_at = draft.text, self.clock()
                return "draft_updated"
            return "draft_held"

    async def handle_for(self, message_id: str) -> dict[str, str] | None:
        """The placeholder the final reply should replace (call with ``lock`` held)."""
        draft = self._drafts.get(message_id)
        if draft is not None and draft.handle is not None:
            return draft.handle
        raw = await self.redis.get(draft_key(message_id))
        return json.loads(raw) if raw else None

    def _finish(self, message_id: str) -> None:
        self._drafts.pop(message_id, None)
        self._finished[message_id] = None
        while len(self._finished) > 10_000:
            self._finished.pop(next(iter(self._finished)))

    def finish(self, message_id: str) -> None:
        """The final reply is out: later pieces of this message are ignored."""
        self._finish(message_id)
        lock = self._locks.get(message_id)
        if lock is not None and not lock.locked():
            del self._locks[message_id]
