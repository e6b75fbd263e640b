"""The end-of-test audit: what the pipeline did with every turn a test sent, read back from Kafka and Redis.

A client that counts the replies it happened to see while it ran, up to a "settle" window, misses a
duplicate that comes later (a restarted worker redoing a turn), a doubled escalation, or a user turn
appended twice to the session history. So a fault or end-to-end test ends like this instead:

1. readiness: every turn it sent has a reply (``wait_all`` polls the client, with a deadline), then
   the worker's consumer group has committed every stage input topic up to its end (``wait_idle``):
   nothing is left to process, so nothing more will be produced — no time-based settle;
2. ``audit`` reads ``chat.outbound`` and ``chat.escalations`` of the test's namespace from offset 0
   to the high watermark taken when called, and the Redis session history of every session sent to;
3. it checks, per message id of what was sent: exactly one reply; exactly one escalation when the
   reply is ESCALATED and none otherwise; each user turn and each reply exactly once in the session
   history, in the order sent (turns answered by enrich — REJECTED, RATE_LIMITED — are not part of
   the conversation, so neither is in the history, and being immediate they may overtake answers);
   the conversation's replies of one session in the order sent.
   ``AuditResult.assert_clean`` fails with every problem found; ``report`` lines use its counts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis

from processors.records import ChatEscalation, ChatRequest, ChatResponse, Status
from streams.codec import DecodeError, make_codec
from streams.config import Settings
from streams.lag import consumer_lag
from streams.topic_reader import read_topic

# Replies written by enrich: the turn never entered the conversation (see processors/session.py).
NOT_IN_HISTORY = {Status.REJECTED, Status.RATE_LIMITED}


def session_layout(settings: Settings) -> tuple[str, int]:
    """(Redis key prefix, messages kept verbatim) as the worker's session store sees them for ``settings``."""
    import redis.asyncio as aioredis

    from processors.session import session_store_from_settings

    store = session_store_from_settings(aioredis.Redis.from_url(settings.redis_connection_url), settings)  # no connection made
    return store.prefix, store.history_turns


def session_keys(session_id: str, prefix: str) -> tuple[str, str]:
    """The history list and the id set of a session, as ``processors.session`` lays them out."""
    base = f"{prefix}s:{{{session_id}}}"
    return f"{base}:turns", f"{base}:ids"


async def wait_all(client, requests: Sequence[ChatRequest], timeout_s: float) -> float:  # type: ignore[no-untyped-def]
    """Until ``client`` has seen a reply to every request; returns when the last one came. Raises on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [r for r in requests if r.message_id not in client.replies]
        if not missing:
            return time.monotonic()
        if time.monotonic() > deadline:
            where = await asyncio.to_thread(where_is, client.settings, [r.message_id for r in missing[:5]])
            raise AssertionError(
                f"{len(missing)} of {len(requests)} turns got no reply within {timeout_s:.0f} s; "
                f"where the first ones are: {where}"
            )
        await asyncio.sleep(0.1)


def where_is(settings: Settings, message_ids: list[str], timeout_s: float = 10.0) -> dict[str, dict[str, int]]:
    """For a failure message: in which topics each turn's id appears (raw bytes), and how often."""
    wanted = {m.encode(): m for m in message_ids}
    found: dict[str, dict[str, int]] = {m: {} for m in message_ids}
    for topic in settings.topics.all():
        short = topic.split("chat.", 1)[1] if "chat." in topic else topic.rsplit(".", 1)[-1]
        for msg in read_topic(settings, topic, timeout_s=timeout_s):
            value = msg.value() or b""
            for raw, mid in wanted.items():
                if raw in value:
                    found[mid][short] = found[mid].get(short, 0) + 1
    return found


async def wait_idle(settings: Settings, timeout_s: float = 60.0) -> None:
    """Until the worker group has committed every stage input topic to its end (lag 0 everywhere).

    After that nothing sent so far can still produce output: this is the readiness condition that
    replaces a fixed settle window before reading the topics back.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        lag = await asyncio.to_thread(consumer_lag, settings)
        if lag and not any(lag.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the pipeline still has uncommitted input {timeout_s:.0f} s after the last reply: {lag}")
        await asyncio.sleep(0.2)


@dataclass
class AuditResult:
    """Per message id what Kafka and Redis hold; ``problems`` lists every violated rule."""

    turns: int
    replies: dict[str, list[ChatResponse]] = field(default_factory=dict)
    escalations: Counter = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    doubled: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def status(self, message_id: str) -> Status:
        return Status(self.replies[message_id][0].status)

    def assert_clean(self) -> None:
        assert not self.problems, f"{len(self.problems)} problems in the audit of {self.turns} turns:\n  " + "\n  ".join(
            self.problems[:25]
        )


def _unique(requests: Iterable[ChatRequest]) -> list[ChatRequest]:
    """The requests once per message id (a test may send one twice), first sending first."""
    seen: dict[str, ChatRequest] = {}
    for r in requests:
        seen.setdefault(r.message_id, r)
    return list(seen.values())


def _read(settings: Settings, topic: str, decode) -> list:  # type: ignore[no-untyped-def]
    out = []
    for msg in read_topic(settings, topic, timeout_s=15.0):
        try:
            out.append(decode(msg.value()))
        except DecodeError:
            continue
    return out


def read_outbound(settings: Settings) -> list[ChatResponse]:
    """Every reply on the namespace's chat.outbound, offset 0 to the high watermark, per partition in order."""
    codec = make_codec(settings)
    return _read(settings, settings.topics.outbound, lambda b: codec.decode(b, ChatResponse))


def read_escalations(settings: Settings) -> list[ChatEscalation]:
    codec = make_codec(settings)
    return _read(settings, settings.topics.escalations, lambda b: codec.decode(b, ChatEscalation))


def read_history(settings: Settings, session_ids: Iterable[str]) -> dict[str, tuple[list[tuple[str, str]], set[str]]]:
    """Per session: the history list as (role, message_id) and the set of appended turn ids."""
    prefix, _ = session_layout(settings)
    client = redis.Redis.from_url(settings.redis_connection_url)
    try:
        out = {}
        for sid in session_ids:
            turns_key, ids_key = session_keys(sid, prefix)
            turns = [json.loads(raw) for raw in client.lrange(turns_key, 0, -1)]
            ids = {raw.decode() for raw in client.smembers(ids_key)}
            out[sid] = ([(t["role"], t["message_id"]) for t in turns], ids)
        return out
    finally:
        client.close()


def audit(
    settings: Settings,
    sent: Sequence[ChatRequest],
    *,
    no_reply: Iterable[str] = (),
    only_sent: bool = True,
    history: bool = True,
) -> AuditResult:
    """Read back the namespace and check every rule above for the turns in ``sent``.

    ``no_reply``: message ids that must get no reply at all (dead-lettered turns). ``only_sent``: the
    namespace is the test's own, so a reply or escalation for any other message id is an error too.
    ``history=False`` skips Redis. An answer on chat.outbound that is missing from the history is a
    problem also after a kill -9 (validate records it again when the crashed turn comes back).
    """
    requests = _unique(sent)
    histories = read_history(settings, {r.session_id for r in requests}) if history else None
    return check(
        requests,
        read_outbound(settings),
        read_escalations(settings),
        histories,
        history_turns=session_layout(settings)[1],
        no_reply=no_reply,
        only_sent=only_sent,
    )


def check(
    sent: Sequence[ChatRequest],
    replies: Sequence[ChatResponse],
    escalations: Sequence[ChatEscalation],
    histories: dict[str, tuple[list[tuple[str, str]], set[str]]] | None,
    *,
    history_turns: int,
    no_reply: Iterable[str] = (),
    only_sent: bool = True,
) -> AuditResult:
    """The rules, on what was read back: replies and escalations in topic order, histories per session."""
    requests = _unique(sent)
    silent = set(no_reply)
    wanted = {r.message_id for r in requests}
    result = AuditResult(turns=len(requests))

    order: dict[str, list[str]] = {}
    for reply in replies:
        if reply.message_id in wanted:
            result.replies.setdefault(reply.message_id, []).append(reply)
            order.setdefault(reply.session_id, []).append(reply.message_id)
        elif only_sent:
            result.problems.append(f"reply for a message id nobody sent: {reply.message_id} ({reply.status})")
    for esc in escalations:
        if esc.message_id in wanted:
            result.escalations[esc.message_id] += 1
        elif only_sent:
            result.problems.append(f"escalation for a message id nobody sent: {esc.message_id}")

    for r in requests:
        got = result.replies.get(r.message_id, [])
        if r.message_id in silent:
            if got:
                result.problems.append(f"{r.message_id}: {len(got)} replies, expected none (dead-lettered)")
            continue
        if not got:
            result.lost.append(r.message_id)
            result.problems.append(f"{r.message_id}: no reply")
            continue
        if len(got) > 1:
            result.doubled[r.message_id] = len(got)
            result.problems.append(f"{r.message_id}: answered {len(got)} times ({[g.status.value for g in got]})")
        due = 1 if Status(got[0].status) is Status.ESCALATED else 0
        if result.escalations[r.message_id] != due:
            result.problems.append(
                f"{r.message_id}: {result.escalations[r.message_id]} escalations for a {got[0].status.value} reply, expected {due}"
            )
            if result.escalations[r.message_id] > 1:
                result.doubled.setdefault(r.message_id, 1)

    by_session: dict[str, list[ChatRequest]] = {}
    for r in requests:
        by_session.setdefault(r.session_id, []).append(r)
    # order: the conversation's replies (written by validate) come in the order sent; a reply written
    # by enrich (REJECTED, RATE_LIMITED) is immediate and may overtake answers still being generated
    def answered(mid: str) -> bool:
        return mid in result.replies and mid not in silent and Status(result.replies[mid][0].status) not in NOT_IN_HISTORY

    for sid, turns in by_session.items():
        expected = [r.message_id for r in turns if answered(r.message_id)]
        seen = [mid for mid in dict.fromkeys(order.get(sid, [])) if answered(mid)]
        if seen != expected:
            result.problems.append(f"session {sid}: replies in order {seen}, sent {expected}")

    if histories is not None:
        for sid, turns in by_session.items():
            conversation: list[tuple[str, str]] = []
            for r in turns:
                got = result.replies.get(r.message_id)
                if r.message_id in silent or not got or Status(got[0].status) in NOT_IN_HISTORY:
                    continue
                conversation += [("user", r.message_id), ("assistant", r.message_id)]
            actual, ids = histories.get(sid, ([], set()))
            doubles = [f"{role}:{mid}" for (role, mid), n in Counter(actual).items() if n > 1]
            if doubles:
                for entry in doubles:
                    result.doubled.setdefault(entry.split(":", 1)[1], 1)
                result.problems.append(f"session {sid}: history holds {doubles} more than once")
            # the history keeps the last ``history_turns`` messages, older ones roll into the summary
            tail = conversation[-history_turns:] if history_turns else []
            if actual != tail:
                result.problems.append(f"session {sid}: history {actual}, expected {tail}")
            want_ids = {f"{'u' if role == 'user' else 'a'}:{mid}" for role, mid in conversation}
            if ids != want_ids:
                result.problems.append(
                    f"session {sid}: turn ids missing {sorted(want_ids - ids)[:4]}, unexpected {sorted(ids - want_ids)[:4]}"
                )
    return result


async def audit_when_done(
    client,  # type: ignore[no-untyped-def]
    sent: Sequence[ChatRequest],
    *,
    timeout_s: float = 120.0,
    no_reply: Iterable[str] = (),
    only_sent: bool = True,
    history: bool = True,
) -> AuditResult:
    """Readiness, then the audit: every expected reply seen by ``client``, the group idle, then read back."""
    silent = set(no_reply)
    await wait_all(client, [r for r in _unique(sent) if r.message_id not in silent], timeout_s=timeout_s)
    await wait_idle(client.settings, timeout_s=timeout_s)
    return await asyncio.to_thread(
        audit, client.settings, sent, no_reply=silent, only_sent=only_sent, history=history,
    )
