"""What a fault test measures: turns lost, turns doubled, sessions out of order, time to recover.

Each fault test prints one ``FAULT-REPORT`` line (``pytest -s`` shows them) so the table in the
issue's report is filled from measurements, not guesses.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from processors.records import ChatRequest, ChatResponse
from streams.client import ChatClient, new_request


def conversation(sessions: int, turns_per_session: int, *, channel: str = "web", text: str | None = None) -> list[ChatRequest]:
    """Turns interleaved across sessions (turn 0 of every session, then turn 1, ...), unique users."""
    sids = [f"{channel}:{uuid.uuid4().hex[:10]}" for _ in range(sessions)]
    users = {sid: f"fault-{uuid.uuid4().hex[:10]}" for sid in sids}
    out = []
    for turn in range(turns_per_session):
        for sid in sids:
            question = text or f"turn {turn}: how do I export my data?"
            out.append(new_request(question, sid, user_id=users[sid], channel=channel))
    return out


async def send_all(client: ChatClient, requests: list[ChatRequest], *, concurrency: int = 200) -> None:
    """Publish in order per session (one session's turns go out one after the other)."""
    by_session: dict[str, list[ChatRequest]] = {}
    for r in requests:
        by_session.setdefault(r.session_id, []).append(r)

    async def one_session(turns: list[ChatRequest]) -> None:
        for r in turns:
            await client.send(r)

    await asyncio.gather(*(one_session(t) for t in by_session.values()))


async def wait_all(client: ChatClient, requests: list[ChatRequest], timeout_s: float) -> float:
    """Wait until every request has a reply; returns when the last one came. Raises on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [r for r in requests if r.message_id not in client.replies]
        if not missing:
            return time.monotonic()
        if time.monotonic() > deadline:
            where = where_is(client.settings, [r.message_id for r in missing[:5]])
            raise AssertionError(
                f"{len(missing)} of {len(requests)} turns got no reply within {timeout_s:.0f} s; "
                f"where the first ones are: {where}"
            )
        await asyncio.sleep(0.2)


async def wait_count(client: ChatClient, requests: list[ChatRequest], count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(r.message_id in client.replies for r in requests) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} replies within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


@dataclass
class Outcome:
    turns: int
    lost: list[str] = field(default_factory=list)
    doubled: dict[str, int] = field(default_factory=dict)
    out_of_order: list[str] = field(default_factory=list)

    def assert_exactly_once(self, in_order: bool = True) -> None:
        assert not self.lost, f"{len(self.lost)} of {self.turns} turns lost, e.g. {self.lost[:3]}"
        assert not self.doubled, f"{len(self.doubled)} turns answered more than once: {list(self.doubled.items())[:5]}"
        if in_order:
            assert not self.out_of_order, f"{len(self.out_of_order)} sessions out of order, e.g. {self.out_of_order[:3]}"


def outcome(client: ChatClient, requests: list[ChatRequest]) -> Outcome:
    result = Outcome(turns=len(requests))
    for r in requests:
        got = client.replies.get(r.message_id, [])
        if not got:
            result.lost.append(r.message_id)
        elif len(got) > 1:
            result.doubled[r.message_id] = len(got)
    wanted = {r.message_id for r in requests}
    expected: dict[str, list[str]] = {}
    for r in requests:
        expected.setdefault(r.session_id, []).append(r.message_id)
    seen: dict[str, list[str]] = {}
    for reply in client.reply_order:
        if reply.message_id in wanted:
            seen.setdefault(reply.session_id, []).append(reply.message_id)
    for sid, ids in expected.items():
        if list(dict.fromkeys(seen.get(sid, []))) != ids:
            result.out_of_order.append(sid)
    return result


def replies_of(client: ChatClient, requests: list[ChatRequest]) -> list[ChatResponse]:
    return [client.replies[r.message_id][0] for r in requests if r.message_id in client.replies]


def report(fault: str, user_saw: str, result: Outcome, recover_s: float | None) -> None:
    recover = "-" if recover_s is None else f"{recover_s:.1f} s"
    print(
        f"\nFAULT-REPORT | {fault} | {user_saw} | lost {len(result.lost)}/{result.turns} | "
        f"doubled {len(result.doubled)} | recover {recover}",
        flush=True,
    )


def where_is(settings, message_ids: list[str], timeout_s: float = 10.0) -> dict[str, dict[str, int]]:
    """For a failure message: in which topics each turn's id appears (raw bytes), and how often."""
    from streams.topic_reader import read_topic

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
