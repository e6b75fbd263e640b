"""Session state in Redis: history, rolling summary, failure count, rate limit, reply markers.

Everything the enrich stage needs from Redis for a turn is one Lua script (``admit``: duplicate
check, rate token, append and load; ``processors.session_scripts``), and the calls of many in-flight
turns share one pipeline, because Redis sits on the path of every turn and round trips are what limit
the enrich stage's throughput. Lua makes each step atomic: a reprocessed request (same ``message_id``
after a crash) finds its own turn already appended and does not append it twice.

Keys (``{session_id}`` is a Redis Cluster hash tag, so one session's keys share a slot):

- ``<prefix>s:{sid}:turns``  list of JSON turns, oldest first, at most ``history_turns`` after a reply
  plus questions still waiting for theirs (up to twice that, see ``session_scripts.roll``)
- ``<prefix>s:{sid}:meta``   hash: ``summary`` (rolled-off turns), ``failures`` (consecutive)
- ``<prefix>s:{sid}:ids``    set of appended turn ids (``u:<message_id>`` / ``a:<message_id>``)
- ``<prefix>rl:<user_id>``   token bucket (hash: tokens, ts)
- ``<prefix>replied:<message_id>``  exactly-one-reply marker, TTL ``idempotency_ttl_s``
- ``<prefix>claim:<message_id>``    ``<owner>:<token>`` of the stage about to produce the reply (short TTL)
- ``<prefix>claimseq:<message_id>`` the fencing-token counter of that message id

Redis Cluster is not supported: the client is a plain ``redis.asyncio.Redis``, and the scripts take keys
of several slots (``admit``: the reply marker, the user's bucket and the session's keys; the reply
claim: marker, claim and counter), which a cluster refuses (CROSSSLOT). Every key a script touches
is passed in KEYS, so supporting a cluster is a key-naming change (the marker, claim and counter keyed
by a ``{session_id}`` tag, the bucket checked in its own call), with a migration of the markers.

The session keys share a TTL that every turn refreshes. A "turn" of the history is one message
(a user or an assistant message), so ``history_turns=8`` keeps four exchanges verbatim; older
messages are rolled into an extractive summary (first sentence of each, oldest dropped first), a
question only once its answer is recorded (a burst of questions would otherwise lose them), so the
session stays bounded in size however long it runs. ``summary_max_chars`` is enforced in UTF-8 bytes,
which never exceeds that many characters.

Outages: these methods raise redis errors as they come and keep no half-done state (each script is
atomic and idempotent), so the caller can simply retry: the stage runner waits with backoff
(``processors.backoff`` explains why waiting beats degrading here).

Spans: each call but the duplicate check (``is_replied``, see there) is a ``redis <op>`` child span
of the caller's span (``db.system=redis``, how many turns shared the round trip when more than one);
no message text goes into attributes.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from opentelemetry import trace
from redis.exceptions import NoScriptError

from processors.coalesce import Coalescer
from processors.records import ChatRequest, ChatResponse, ChatTurn, HistoryTurn, Status, now_ms
from processors.session_scripts import ADMIT, CLAIM_REPLY, MARK_CLAIMED, RECORD
from processors.spans import active_span

tracer = trace.get_tracer("chatstream.session")

# Replies that change the consecutive-failure count; RATE_LIMITED is not part of the conversation.
_FAILURE_STATUSES = {Status.FALLBACK, Status.ESCALATED, Status.BLOCKED, Status.REJECTED}


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _turn_json(role: str, message_id: str, text: str, at: int) -> str:
    # Fixed key order: the Lua scripts find a turn by the prefix up to the message id.
    return json.dumps(
        {"role": role, "message_id": message_id, "at": at, "text": text}, ensure_ascii=False, separators=(",", ":")
    )


def _turn_prefix(role: str, message_id: str) -> str:
    return json.dumps({"role": role, "message_id": message_id}, ensure_ascii=False, separators=(",", ":"))[:-1] + ","


def _history_turn(raw: bytes | str) -> HistoryTurn:
    data = json.loads(_text(raw))
    return HistoryTurn(role=data["role"], text=data["text"], message_id=data.get("message_id", ""), at=data.get("at", 0))


class SessionStore:
    """Session history, rate limits and reply markers for the enrich and validate stages.

    Per-turn methods (``admit``, ``record_reply``, the reply claims) are coalesced: the calls that
    many in-flight turns make in the same event-loop iteration share one pipeline (see
    ``processors.coalesce``), so the stages need no batch API of their own.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        history_turns: int,
        summary_max_chars: int,
        session_ttl_s: int,
        idempotency_ttl_s: int,
        rate_per_minute: float,
        burst: int,
        key_prefix: str = "cs:",
        coalesce: bool = True,
    ) -> None:
        if history_turns < 0 or summary_max_chars < 16:
            raise ValueError("history_turns must be >= 0 and summary_max_chars >= 16")
        if session_ttl_s <= 0 or idempotency_ttl_s <= 0:
            raise ValueError("session_ttl_s and idempotency_ttl_s must be > 0")
        if rate_per_minute <= 0 or burst < 1:
            raise ValueError("rate_per_minute must be > 0 and burst >= 1")
        self.redis = redis
        self.history_turns = history_turns
        self.summary_max_chars = summary_max_chars
        self.session_ttl_s = session_ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self.rate_per_minute = rate_per_minute
        self.burst = burst
        self.prefix = key_prefix
        self.coalesce = coalesce
        # one rolled-off message may take at most a quarter of the summary
        self._piece_cap = max(40, summary_max_chars // 4)
        self._record = redis.register_script(RECORD)
        self._claim = redis.register_script(CLAIM_REPLY)
        self._mark_claimed = redis.register_script(MARK_CLAIMED)
        self._admit = redis.register_script(ADMIT)
        # who holds a reply claim: unique per store (one per stage of a worker process), readable in Redis
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._scripts_loaded = False
        self._admit_co: Coalescer[ChatRequest, Admission] = Coalescer(self._admit_batch)
        self._record_co: Coalescer[tuple[ChatRequest, ChatResponse], None] = Coalescer(self._record_batch)
        self._replied_co: Coalescer[str, bool] = Coalescer(self._replied_batch)
        self._mark_co: Coalescer[str, None] = Coalescer(self._mark_batch)
        self._claim_co: Coalescer[tuple[str, int], ReplyClaim] = Coalescer(self._claim_batch)
        self._mark_claimed_co: Coalescer[ReplyClaim, bool] = Coalescer(self._mark_claimed_batch)
        self._finish_co: Coalescer[tuple[ReplyClaim, ChatRequest, ChatResponse], bool] = Coalescer(self._finish_batch)

    # --- keys -----------------------------------------------------------------------------------
    def _session_keys(self, session_id: str) -> list[str]:
        base = f"{self.prefix}s:{{{session_id}}}"
        return [f"{base}:turns", f"{base}:meta", f"{base}:ids"]

    def _replied_key(self, message_id: str) -> str:
        return f"{self.prefix}replied:{message_id}"

    def _bucket_key(self, user_id: str) -> str:
        return f"{self.prefix}rl:{user_id}"

    # --- spans and dispatch ---------------------------------------------------------------------
    @staticmethod
    def _span(name: str, operation: str, items: int, session_id: str | None = None) -> active_span:
        # attributes given at start (one validation pass, no per-attribute lock); ``items`` only when
        # a caller passed a batch, the usual single item needs no attribute to say so. ``active_span``,
        # not ``start_as_current_span`` in a generator: these are a third of a turn's spans
        attributes: dict[str, object] = {"db.system": "redis", "db.operation": operation}
        if items != 1:
            attributes["chatstream.items"] = items
        if session_id is not None:
            attributes["chatstream.session_id"] = session_id
        return active_span(tracer, name, attributes=attributes)  # type: ignore[arg-type]

    async def _one(self, coalescer: Coalescer, batch_fn, item, span=None):  # type: ignore[no-untyped-def]
        """One item through its coalescer; ``span`` (if any) learns how many turns shared the round trip."""
        if not self.coalesce:
            (result,) = await batch_fn([item])
            batch_size = 1
        else:
            result, batch_size = await coalescer.submit(item)
        if span is not None and batch_size > 1:
            span.set_attribute("chatstream.batch_size", batch_size)
        return result

    async def _run_scripts(self, calls: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """EVALSHA each (script, keys, args) in one pipeline.

        redis-py would check ``SCRIPT EXISTS`` before every pipeline that uses a registered script,
        an extra round trip each time; instead the scripts are loaded once, and again only when
        Redis answers NOSCRIPT (after a restart). Re-running the batch then is safe: the session
        scripts are idempotent, and NOSCRIPT means no script of the batch ran.
        """
        for attempt in (1, 2):
            if not self._scripts_loaded:
                for script in (self._admit, self._record, self._claim, self._mark_claimed):
                    script.sha = await self.redis.script_load(script.script)
                self._scripts_loaded = True
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for script, keys, args in calls:
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    return await pipe.execute()
            except NoScriptError:
                self._scripts_loaded = False
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # --- admit: duplicate check, rate token, append and load in one call --------------------------
    async def admit(self, request: ChatRequest) -> Admission:
        """What the enrich stage asks per turn, in one script and one round trip (shared by the turns in
        flight): ``replied`` (a reply exists: drop the repeat), ``rate_limited`` (no token: the message
        is not appended) or ``admitted`` with the turn and its session context (history without this
        message, summary, failure streak).

        The user message is appended once per message_id, and a message admitted before (a
        redelivery, a re-sent batch) takes no second rate token: a caller may retry it after any error.
        """
        with self._span("redis session.admit", "EVALSHA", 1, request.session_id) as span:
            admission = await self._one(self._admit_co, self._admit_batch, request, span)
            span.set_attribute("chatstream.admission", admission.outcome)
            return admission

    async def _admit_batch(self, requests: list[ChatRequest]) -> list[Admission]:
        rate = self.rate_per_minute / 60.0
        calls = [
            (
                self._admit,
                [self._replied_key(req.message_id), self._bucket_key(req.user_id), *self._session_keys(req.session_id)],
                [self.burst, rate, *self._enrich_args(req)],
            )
            for req in requests
        ]
        admissions = []
        for req, (outcome, *rest) in zip(requests, await self._run_scripts(calls)):
            outcome = _text(outcome)
            if outcome == "admitted":
                admissions.append(Admission(outcome, turn=self._turn(req, rest)))
            elif outcome == "rate_limited":
                admissions.append(Admission(outcome, retry_after_s=float(_text(rest[0]))))
            elif outcome == "replied":
                admissions.append(Admission(outcome))
            else:
                raise RuntimeError(f"the admit script answered {outcome!r}")
        return admissions

    def _enrich_args(self, req: ChatRequest) -> list[Any]:
        """The ADMIT script's ARGV after its two rate-limit arguments (those of ``enrich_turn``)."""
        return [
            req.message_id,
            _turn_json("user", req.message_id, req.text, req.sent_at or now_ms()),
            _turn_prefix("user", req.message_id),
            self.history_turns,
            self.session_ttl_s,
            self.summary_max_chars,
            self._piece_cap,
        ]

    @staticmethod
    def _turn(req: ChatRequest, result: list[Any]) -> ChatTurn:
        """The turn from an admission's answer: {fresh, summary, failures, history_json...}."""
        _fresh, summary, failures, *history = result
        return ChatTurn(
            request=req,
            history=[_history_turn(raw) for raw in history],
            summary=_text(summary),
            session_failures=int(_text(failures) or 0),
        )

    # --- record the reply -----------------------------------------------------------------------
    async def record_reply(self, request: ChatRequest, response: ChatResponse) -> None:
        """Append the assistant message once per message_id and update the failure streak.

        A RATE_LIMITED reply is not part of the conversation and is not recorded.
        """
        if Status(response.status) is Status.RATE_LIMITED:
            return
        with self._span("redis session.append_reply", "EVALSHA", 1, request.session_id) as span:
            await self._one(self._record_co, self._record_batch, (request, response), span)

    async def _record_batch(self, pairs: list[tuple[ChatRequest, ChatResponse]]) -> list[None]:
        await self._run_scripts([self._record_call(req, resp) for req, resp in pairs])
        return [None] * len(pairs)

    def _record_call(self, req: ChatRequest, resp: ChatResponse) -> tuple[Any, list[str], list[Any]]:
        status = Status(resp.status)
        delta = "reset" if status is Status.ANSWERED else "incr" if status in _FAILURE_STATUSES else "keep"
        return (
            self._record,
            self._session_keys(req.session_id),
            [
                req.message_id,
                _turn_json("assistant", req.message_id, resp.text, resp.created_at or now_ms()),
                _turn_prefix("user", req.message_id),
                self.history_turns,
                self.session_ttl_s,
                self.summary_max_chars,
                self._piece_cap,
                delta,
            ],
        )

    # --- exactly one reply ----------------------------------------------------------------------
    async def is_replied(self, message_id: str) -> bool:
        """True when a reply for this message_id was already produced.

        No span of its own: one EXISTS in a shared pipeline shows neither time nor a failure of its
        own (a Redis failure surfaces as the caller's retry event, a repeat as its "duplicate" event),
        and it runs twice per turn, so its span cost more than the check.
        """
        return await self._one(self._replied_co, self._replied_batch, message_id)

    async def _replied_batch(self, message_ids: list[str]) -> list[bool]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for mid in message_ids:
                pipe.exists(self._replied_key(mid))
            return [bool(hit) for hit in await pipe.execute()]

    async def mark_replied(self, message_ids: Sequence[str]) -> None:
        """Remember that these message ids have their reply (kept ``idempotency_ttl_s``)."""
        if not message_ids:
            return
        with self._span("redis idempotency.mark", "SET", len(message_ids)) as span:
            if len(message_ids) == 1:
                await self._one(self._mark_co, self._mark_batch, message_ids[0], span)
            else:
                await self._mark_batch(list(message_ids))

    async def _mark_batch(self, message_ids: list[str]) -> list[None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for mid in message_ids:
                pipe.set(self._replied_key(mid), now_ms(), ex=self.idempotency_ttl_s)
            await pipe.execute()
        return [None] * len(message_ids)

    # --- reply claims with a fencing token ------------------------------------------------------
    def _claim_keys(self, message_id: str) -> list[str]:
        return [self._replied_key(message_id), f"{self.prefix}claim:{message_id}", f"{self.prefix}claimseq:{message_id}"]

    async def claim_reply(self, message_id: str, ttl_ms: int) -> ReplyClaim:
        """Ask to produce the reply of ``message_id`` now (atomic with the replied-marker check).

        ``ok``: the claim is ours with a fresh fencing token, produce and then :meth:`mark_claimed`;
        ``replied``: a reply exists, drop the turn; ``held``: another owner is producing it right now,
        ask again after ``wait_ms`` (its claim expires by then if it died).
        """
        with self._span("redis reply.claim", "EVALSHA", 1) as span:
            return await self._one(self._claim_co, self._claim_batch, (message_id, ttl_ms), span)

    async def _claim_batch(self, items: list[tuple[str, int]]) -> list[ReplyClaim]:
        results = await self._run_scripts(
            [(self._claim, self._claim_keys(mid), [self.owner, ttl_ms, self.idempotency_ttl_s]) for mid, ttl_ms in items]
        )
        return [
            ReplyClaim(mid, self.owner, int(token), _text(state), max(0, int(wait_ms)))
            for (mid, _), (token, state, wait_ms) in zip(items, results)
        ]

    async def mark_claimed(self, claim: ReplyClaim) -> bool:
        """Mark the reply produced under ``claim``; False when the claim was no longer ours (fenced)."""
        with self._span("redis reply.mark", "EVALSHA", 1) as span:
            return await self._one(self._mark_claimed_co, self._mark_claimed_batch, claim, span)

    async def _mark_claimed_batch(self, claims: list[ReplyClaim]) -> list[bool]:
        results = await self._run_scripts([self._mark_claimed_call(claim) for claim in claims])
        return [bool(int(mine)) or bool(int(first)) for mine, first in results]

    def _mark_claimed_call(self, claim: ReplyClaim) -> tuple[Any, list[str], list[Any]]:
        return (
            self._mark_claimed,
            self._claim_keys(claim.message_id)[:2],
            [f"{claim.owner}:{claim.token}", now_ms(), self.idempotency_ttl_s],
        )

    async def finish_reply(self, claim: ReplyClaim, request: ChatRequest, response: ChatResponse) -> bool:
        """:meth:`mark_claimed`, then :meth:`record_reply`, in one round trip: what validate does after
        producing an answer. Redis runs the two scripts in that order, as two separate calls would;
        both are idempotent, so a caller may retry the pair. Returns what ``mark_claimed`` returns."""
        with self._span("redis reply.finish", "EVALSHA", 1, request.session_id) as span:
            return await self._one(self._finish_co, self._finish_batch, (claim, request, response), span)

    async def _finish_batch(self, items: list[tuple[ReplyClaim, ChatRequest, ChatResponse]]) -> list[bool]:
        calls = []
        for claim, req, resp in items:
            calls.append(self._mark_claimed_call(claim))
            if Status(resp.status) is not Status.RATE_LIMITED:  # not part of the conversation (record_reply)
                calls.append(self._record_call(req, resp))
        results = iter(await self._run_scripts(calls))
        marked = []
        for _claim, _req, resp in items:
            mine, first = next(results)
            marked.append(bool(int(mine)) or bool(int(first)))
            if Status(resp.status) is not Status.RATE_LIMITED:
                next(results)
        return marked

    # --- housekeeping ---------------------------------------------------------------------------
    async def forget_session(self, session_id: str) -> None:
        """Delete a session's history and summary (a user's "start over" or data deletion)."""
        with self._span("redis session.delete", "DEL", 1):
            await self.redis.delete(*self._session_keys(session_id))


def redis_key_prefix(topic_prefix: str) -> str:
    """Redis key prefix of a topic namespace: ``cs:`` for production, ``cs:<prefix>`` otherwise."""
    return f"cs:{topic_prefix}" if topic_prefix else "cs:"


async def delete_namespace_keys(redis: aioredis.Redis, topic_prefix: str, *, chunk: int = 500) -> int:
    """Delete every key of a throw-away namespace (a bench run's, an evaluated replay's); returns how many.

    Why: a turn leaves a reply marker and a claim counter for ``idempotency_ttl_s`` (7 days) and its
    session for ``session_ttl_s``; after an afternoon of benches (25 runs) a test stack held 70,000
    such keys of finished runs (with 30,000 of their questions' vectors, 82 MB, written again by every
    snapshot). The shared query vectors (``cs:kb:``) belong to no namespace and are not touched.
    """
    if not topic_prefix:
        raise ValueError("refusing to delete the keys of the live namespace (no topic prefix)")
    pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in redis_key_prefix(topic_prefix)) + "*"
    deleted, batch = 0, []
    async for key in redis.scan_iter(match=pattern, count=1000):  # keys deleted meanwhile do not upset SCAN
        batch.append(key)
        if len(batch) >= chunk:
            deleted += await redis.unlink(*batch)
            batch = []
    if batch:
        deleted += await redis.unlink(*batch)
    return deleted


@dataclass(frozen=True)
class Admission:
    """The answer to :meth:`SessionStore.admit`."""

    outcome: str  # "admitted" | "replied" | "rate_limited"
    turn: ChatTurn | None = None  # when admitted: the request with its session context
    retry_after_s: float = 0.0  # when rate limited: seconds until the user's next token


@dataclass(frozen=True)
class ReplyClaim:
    """The answer to :meth:`SessionStore.claim_reply`."""

    message_id: str
    owner: str
    token: int  # fencing token: grows with every new claim of this message id
    state: str  # "ok" | "replied" | "held"
    wait_ms: int = 0


def session_store_from_settings(redis: aioredis.Redis, settings) -> SessionStore:  # type: ignore[no-untyped-def]
    """The store configured from ``streams.config.Settings`` (one place maps names to arguments).

    ``history_policy`` decides what a prompt carries of a conversation: ``summary`` keeps the last
    ``history_turns`` messages verbatim and rolls older ones into the summary; ``full`` keeps every
    message verbatim (bounded by ``full_history_max_turns``), so nothing is ever summarised.
    Keys are namespaced by ``redis_key_prefix`` so that a replay or a benchmark never shares
    sessions, rate-limit buckets or reply markers with production.
    """
    full = getattr(settings, "history_policy", "summary") == "full"
    return SessionStore(
        redis,
        key_prefix=redis_key_prefix(settings.topic_prefix),
        history_turns=settings.full_history_max_turns if full else settings.history_turns,
        summary_max_chars=settings.summary_max_chars,
        session_ttl_s=settings.session_ttl_s,
        idempotency_ttl_s=settings.idempotency_ttl_s,
        rate_per_minute=settings.rate_limit_per_minute,
        burst=settings.rate_limit_burst,
    )
