"""``ChatDelta.step``: the one rule every reader of provisional pieces applies (hub, drafts, page)."""

from __future__ import annotations

from processors.records import ChatDelta


def piece(seq: int, attempt: str) -> ChatDelta:
    return ChatDelta(message_id="m", session_id="s", channel="web", seq=seq, text=f"{attempt}{seq} ", attempt=attempt)


def test_pieces_of_one_attempt_append_in_order_and_repeats_are_dropped() -> None:
    assert piece(0, "a").step(None, -1) == "append"
    assert piece(3, "a").step(None, -1) == "append"  # a reader that starts late shows what it gets
    assert piece(1, "a").step("a", 0) == "append"
    assert piece(1, "a").step("a", 1) == "drop" and piece(0, "a").step("a", 2) == "drop"


def test_another_attempt_from_seq_0_replaces_and_a_superseded_one_is_dropped() -> None:
    assert piece(0, "b").step("a", 4) == "restart"  # the turn generated again after a crash
    assert piece(5, "a").step("b", 1) == "drop"  # a late piece of the attempt it replaced
    assert piece(2, "c").step("b", 1) == "drop"  # no seq 0 seen for it: not shown half-way


def test_pieces_shown_before_attempts_existed_continue() -> None:
    """A reader that kept no attempt ("", before ChatDelta v2) continues with the same generation."""
    assert piece(4, "a").step("", 3) == "append"
    assert piece(0, "a").step("", 3) == "restart"
    assert piece(2, "").step("", 1) == "append"
