"""What a fault test sends and reports: conversations, sending in session order, the FAULT-REPORT line.

Whether each turn got exactly one reply (and escalation, and history entry) is the end-of-test audit
in ``tests/audit.py``; each fault test prints one ``FAULT-REPORT`` line from it (``pytest -s`` shows
them) so the table in the issue's report is filled from measurements, not guesses.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from processors.records import ChatRequest
from streams.client import ChatClient, new_request
from tests.audit import AuditResult, wait_all  # noqa: F401  (wait_all: the readiness check the tests use)


def conversation(sessions: int, turns_per_session: int, *, channel: str = "web", handoff_every: int = 0) -> list[ChatRequest]:
    """Turns interleaved across sessions (turn 0 of every session, then turn 1, ...), unique users.

    Each question carries its message id (``ref <id>``), so the scripted LLM's request log can tell
    which turn each LLM call was for (``tests/faults/llm_log.py``). With ``handoff_every=k`` every
    k-th turn asks for a human: it is ESCALATED, so the audit also checks ``chat.escalations``.
    """
    sids = [f"{channel}:{uuid.uuid4().hex[:10]}" for _ in range(sessions)]
    users = {sid: f"fault-{uuid.uuid4().hex[:10]}" for sid in sids}
    out = []
    for turn in range(turns_per_session):
        for n, sid in enumerate(sids):
            mid = str(uuid.uuid4())
            handoff = handoff_every and (turn * sessions + n) % handoff_every == handoff_every - 1
            ask = "I want to talk to a human about exporting my data" if handoff else "how do I export my data?"
            question = f"turn {turn}: {ask} (ref {mid})"
            out.append(new_request(question, sid, user_id=users[sid], channel=channel, message_id=mid))
    return out


async def send_all(client: ChatClient, requests: list[ChatRequest]) -> None:
    """Publish in order per session (one session's turns go out one after the other)."""
    by_session: dict[str, list[ChatRequest]] = {}
    for r in requests:
        by_session.setdefault(r.session_id, []).append(r)

    async def one_session(turns: list[ChatRequest]) -> None:
        for r in turns:
            await client.send(r)

    await asyncio.gather(*(one_session(t) for t in by_session.values()))


async def wait_count(client: ChatClient, requests: list[ChatRequest], count: int, timeout_s: float) -> None:
    """Until at least ``count`` of ``requests`` have a reply (a test's trigger point mid-stream)."""
    deadline = time.monotonic() + timeout_s
    while sum(r.message_id in client.replies for r in requests) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} replies within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


def report(fault: str, user_saw: str, result: AuditResult, recover_s: float | None) -> None:
    recover = "-" if recover_s is None else f"{recover_s:.1f} s"
    print(
        f"\nFAULT-REPORT | {fault} | {user_saw} | lost {len(result.lost)}/{result.turns} | "
        f"doubled {len(result.doubled)} | problems {len(result.problems)}"
        + f" | recover {recover}",
        flush=True,
    )
