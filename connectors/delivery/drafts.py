"""Provisional answers on channels that can edit a sent message (Slack, Teams).

While a turn is generated, its ``ChatDelta`` pieces arrive on chat.deltas. For a channel whose
client can edit (``EditableClient``) the first piece with text posts a placeholder message, later
pieces update it in place at most once per ``min_interval_s`` per message (Slack asks for about one
update per second per message; chat.update is a Tier 3 method), and the final ``ChatResponse``
from chat.outbound replaces it with the authoritative text (redacted, BLOCKED or ESCALATED wording,
citations) instead of posting a second message. Channels that cannot edit (WhatsApp) only ever get
the final reply.

Several deliver processes share the work, and chat.deltas and chat.outbound are different topics: one
process may edit a message's placeholder while another sends its final reply, and a process that takes
over a partition (or a redone turn) sees pieces again. So a message's draft lives in Redis, not in the
process: the hash ``draft-state:{message_id}`` holds the text so far, the last piece's ``seq``, the
placeholder's address, what was last shown, and ``final`` once the final reply is being sent. Every
change to it, and every channel call on the placeholder, happens under the message's Redis lock
(redis-py's ``Lock``: a token, released only by its owner). The lock is a short lease (``lease_s``)
that its holder renews while it works, so a process killed holding it blocks the message for seconds,
not for the longest channel call; a waiter waits up to ``lock_ttl_s``, which outlasts a live holder's
slowest channel call. Hence:

- the final reply wins: it takes the lock (waiting for a provisional edit in flight to finish), marks
  the draft ``final`` and releases it, then edits or posts; a piece handled later, anywhere, finds
  ``final`` and is dropped;
- pieces are applied by sequence number: a piece at or below the stored ``seq`` is a repeat (a
  re-read after a rebalance, or a redone turn re-sending its pieces) and adds no text; the process that
  continues a draft continues its text and edits the same placeholder.

What is left: a redone turn whose new pieces differ from the first attempt's (a non-deterministic
LLM) shows the first attempt's start followed by the redo's continuation until the final reply
replaces it; a provisional edit still in flight when its process's event loop stalls past
``lease_s`` (the lease is then not renewed and another process may edit too).

Drafts are best effort: a failed post or update is logged and counted, never retried or
dead-lettered (the final reply is, as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from redis.exceptions import LockError

from processors.records import ChatDelta, ChatResponse

log = logging.getLogger("chatstream.deliver.drafts")


@runtime_checkable
class EditableClient(Protocol):
    channel: str

    async def post_draft(self, delta: ChatDelta, text: str) -> dict[str, str]: ...

    async def update_draft(self, handle: dict[str, str], delta: ChatDelta, text: str) -> None: ...

    async def finish_draft(self, handle: dict[str, str], resp: ChatResponse) -> dict[str, str]: ...


def draft_key(message_id: str) -> str:
    """The draft's state (a hash); see the module docstring."""
    return f"draft-state:{message_id}"


def draft_lock_key(message_id: str) -> str:
    return f"draft-lock:{message_id}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class DraftState:
    """One message's draft as stored in Redis."""

    seq: int = -1  # the last piece applied
    attempt: str = ""  # the generation whose pieces ``text`` holds (ChatDelta.attempt)
    text: str = ""
    handle: dict[str, str] | None = None  # the placeholder's address on the channel
    shown_seq: int = -1  # the piece whose text the placeholder shows
    shown_at: float = 0.0
    final: bool = False

    @classmethod
    def parse(cls, raw: dict[Any, Any]) -> "DraftState":
        fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
        return cls(
            seq=int(fields.get("seq", -1)),
            attempt=fields.get("attempt", ""),
            text=fields.get("text", ""),
            handle=json.loads(fields["handle"]) if fields.get("handle") else None,
            shown_seq=int(fields.get("shown_seq", -1)),
            shown_at=float(fields.get("shown_at", 0.0)),
            final=fields.get("final") == "1",
        )


Retry = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


async def _once(fn: Callable[[], Awaitable[Any]]) -> Any:
    return await fn()


class Drafts:
    def __init__(
        self,
        redis: Any,
        *,
        min_interval_s: float = 1.0,
        ttl_s: int = 3600,
        lock_ttl_s: float = 30.0,
        lease_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.min_interval_s = min_interval_s
        self.ttl_s = ttl_s
        self.lock_ttl_s = lock_ttl_s
        self.lease_s = min(lease_s, lock_ttl_s)
        self.clock = clock  # wall time: the last edit's time is compared across processes
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # message id -> lock, [holders and waiters]

    @contextlib.asynccontextmanager
    async def lock(self, message_id: str) -> AsyncIterator[None]:
        """This process's lock of a message (its pieces and reply wait here rather than poll Redis);
        forgotten when nobody holds or waits for it."""
        lock, users = self._locks.setdefault(message_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[message_id]

    @contextlib.asynccontextmanager
    async def _shared(self, message_id: str, retry: Retry = _once) -> AsyncIterator[None]:
        """The message's Redis lock: a lease renewed while held, waited for at most ``lock_ttl_s``."""
        lock = self.redis.lock(draft_lock_key(message_id), timeout=self.lease_s, sleep=0.02,
                               blocking_timeout=self.lock_ttl_s + 1.0, thread_local=False)
        if not await retry(lock.acquire):
            log.warning("draft lock of %s not acquired in %.0fs; going on without it", message_id, self.lock_ttl_s)
            yield
            return
        renewing = asyncio.ensure_future(self._renew(lock, message_id))
        try:
            yield
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            try:
                await lock.release()
            except LockError:  # held past its TTL and taken over: the other holder releases it
                log.warning("draft lock of %s expired while held", message_id)
            except Exception as exc:  # Redis trouble: the lock expires by itself
                log.warning("draft lock of %s not released: %s: %s", message_id, type(exc).__name__, exc)

    async def _renew(self, lock: Any, message_id: str) -> None:
        """Reset the lease to ``lease_s`` three times per lease while the holder works."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await lock.reacquire()
            except LockError:  # expired (the loop stalled past the lease): someone else may hold it now
                log.warning("draft lock of %s lapsed while held", message_id)
                return
            except Exception as exc:  # Redis trouble: try again at the next beat
                log.warning("draft lock of %s not renewed: %s: %s", message_id, type(exc).__name__, exc)

    async def _load(self, message_id: str) -> DraftState:
        return DraftState.parse(await self.redis.hgetall(draft_key(message_id)))

    async def _save(self, message_id: str, *, expire: bool = False, **fields: Any) -> None:
        """Write some fields; ``expire`` (when the hash is created, and at the final reply) sets its TTL."""
        key = draft_key(message_id)
        await self.redis.hset(key, mapping={k: _encode(v) for k, v in fields.items()})
        if expire:
            await self.redis.expire(key, self.ttl_s)

    async def on_delta(self, client: EditableClient, delta: ChatDelta, already_delivered: Callable[[], Awaitable[Any]]) -> str:
        """Apply a piece and post or update the placeholder; returns the outcome (for counting and tests)."""
        mid = delta.message_id
        async with self.lock(mid), self._shared(mid):
            state = await self._load(mid)
            if state.final:
                return "draft_after_final"
            step = delta.step(state.attempt, state.seq)
            if step == "drop":
                return "draft_repeat"
            new = state.seq == -1
            if step == "restart":  # generated again after a crash: this attempt replaces the text
                state.text, state.shown_seq = "", -1
            state.text += delta.text
            state.seq, state.attempt = delta.seq, delta.attempt
            # the text first: should the channel call fail, the next piece still continues it
            await self._save(mid, expire=new, seq=state.seq, attempt=state.attempt, text=state.text,
                             **({"shown_seq": -1} if step == "restart" else {}))
            if not state.text.strip():
                return "draft_empty"
            if state.handle is None:
                if await already_delivered():  # a final reply sent before drafts were kept in Redis
                    await self._save(mid, final=1)
                    return "draft_after_final"
                handle = await client.post_draft(delta, state.text)
                await self._save(mid, handle=json.dumps(handle), shown_seq=state.seq, shown_at=self.clock())
                return "draft_posted"
            if state.shown_seq != state.seq and self.clock() - state.shown_at >= self.min_interval_s:
                await client.update_draft(state.handle, delta, state.text)
                await self._save(mid, shown_seq=state.seq, shown_at=self.clock())
                return "draft_updated"
            return "draft_held"

    async def finish(self, message_id: str, retry: Retry = _once) -> dict[str, str] | None:
        """Mark the draft final before its reply is sent; returns the placeholder to replace, if any.

        Taken under the message's lock, so a provisional edit in flight (which holds it) has landed
        first, and no provisional edit starts afterwards: each finds ``final``. The lock is not held
        while the reply is sent: a crash then leaves no lock behind.
        """
        async with self._shared(message_id, retry):
            state = await retry(lambda: self._load(message_id))
            await retry(lambda: self._save(message_id, expire=True, final=1))
        return state.handle


def _encode(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)
