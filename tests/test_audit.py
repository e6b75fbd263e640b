"""The end-of-test audit's rules on hand-made read-backs: each one fails when its property is broken."""

from __future__ import annotations

import pytest

from processors.records import ChatEscalation, ChatRequest, ChatResponse, Status
from streams.client import new_request
from tests.audit import check


def turns(session: str, n: int) -> list[ChatRequest]:
    return [new_request(f"question {i}", session, message_id=f"{session}-m{i}") for i in range(n)]


def reply(r: ChatRequest, status: Status = Status.ANSWERED) -> ChatResponse:
    return ChatResponse.for_request(r, "answer", status)


def escalation(r: ChatRequest) -> ChatEscalation:
    return ChatEscalation(r.message_id, r.session_id, r.user_id, r.channel, "user_requested_human")


def history_of(requests: list[ChatRequest]) -> tuple[list[tuple[str, str]], set[str]]:
    entries = [(role, r.message_id) for r in requests for role in ("user", "assistant")]
    return entries, {f"{role[0]}:{mid}" for role, mid in entries}


def problems(sent, replies, escalations=(), histories=None, **kw) -> list[str]:  # type: ignore[no-untyped-def]
    return check(sent, replies, list(escalations), histories, history_turns=kw.pop("history_turns", 64), **kw).problems


def test_a_clean_run_has_no_problems() -> None:
    sent = turns("s", 3)
    esc = reply(sent[1], Status.ESCALATED)
    replies = [reply(sent[0]), esc, reply(sent[2])]
    assert problems(sent, replies, [escalation(sent[1])], {"s": history_of(sent)}) == []


def test_lost_and_doubled_replies() -> None:
    sent = turns("s", 3)
    found = problems(sent, [reply(sent[0]), reply(sent[1]), reply(sent[1])])
    assert any("s-m1: answered 2 times" in p for p in found), found
    assert any("s-m2: no reply" in p for p in found), found


def test_escalations_exactly_when_due() -> None:
    sent = turns("s", 2)
    replies = [reply(sent[0], Status.ESCALATED), reply(sent[1])]
    assert any("0 escalations for a ESCALATED reply" in p for p in problems(sent, replies, []))
    twice = problems(sent, replies, [escalation(sent[0]), escalation(sent[0])])
    assert any("2 escalations for a ESCALATED reply" in p for p in twice), twice
    undue = problems(sent, replies, [escalation(sent[0]), escalation(sent[1])])
    assert any("1 escalations for a ANSWERED reply, expected 0" in p for p in undue), undue


def test_replies_out_of_session_order() -> None:
    sent = turns("s", 2)
    found = problems(sent, [reply(sent[1]), reply(sent[0])])
    assert any("replies in order" in p for p in found), found


def test_an_immediate_rejection_may_overtake_answers() -> None:
    sent = turns("s", 3)
    replies = [reply(sent[2], Status.RATE_LIMITED), reply(sent[0]), reply(sent[1])]
    assert problems(sent, replies) == []
    assert problems(sent, [reply(sent[2], Status.RATE_LIMITED), reply(sent[1]), reply(sent[0])])


def test_history_doubles_gaps_and_order() -> None:
    sent = turns("s", 2)
    replies = [reply(r) for r in sent]
    entries, ids = history_of(sent)
    doubled = problems(sent, replies, histories={"s": (entries[:2] + entries[:2] + entries[2:], ids)})
    assert any("more than once" in p for p in doubled), doubled
    missing = problems(sent, replies, histories={"s": (entries[:3], ids - {"a:s-m1"})})
    assert any("turn ids missing ['a:s-m1']" in p for p in missing), missing
    swapped = problems(sent, replies, histories={"s": ([entries[1], entries[0], *entries[2:]], ids)})
    assert any("history [" in p for p in swapped), swapped


def test_rate_limited_and_rejected_turns_stay_out_of_the_history() -> None:
    sent = turns("s", 3)
    replies = [reply(sent[0]), reply(sent[1], Status.RATE_LIMITED), reply(sent[2], Status.REJECTED)]
    assert problems(sent, replies, histories={"s": history_of(sent[:1])}) == []
    assert problems(sent, replies, histories={"s": history_of(sent[:2])})  # a rate-limited turn in it is wrong


def test_history_tail_when_older_messages_rolled_into_the_summary() -> None:
    sent = turns("s", 3)
    entries, ids = history_of(sent)
    replies = [reply(r) for r in sent]
    assert problems(sent, replies, histories={"s": (entries[-4:], ids)}, history_turns=4) == []
    assert problems(sent, replies, histories={"s": (entries[-5:], ids)}, history_turns=4)


@pytest.mark.parametrize("only_sent", [True, False])
def test_dead_lettered_and_foreign_ids(only_sent: bool) -> None:
    sent = turns("s", 2)
    stranger = new_request("not ours", "other", message_id="x")
    found = problems(sent, [reply(sent[0]), reply(stranger)], no_reply=[sent[1].message_id], only_sent=only_sent)
    assert bool(found) is only_sent, found
    assert problems(sent, [reply(sent[0]), reply(sent[1])], no_reply=[sent[1].message_id])


def test_an_answer_missing_from_the_history_is_a_problem() -> None:
    """The kill -9 pattern (answer on chat.outbound, question in the history, answer never appended)."""
    sent = turns("s", 2)
    replies = [reply(r) for r in sent]
    entries, ids = history_of(sent)
    gap = ([e for e in entries if e != ("assistant", "s-m0")], ids - {"a:s-m0"})
    found = problems(sent, replies, histories={"s": gap})
    assert any("turn ids missing ['a:s-m0']" in p for p in found), found
