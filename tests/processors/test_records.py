"""``ChatDelta.step``: the one rule every reader of provisional pieces applies (hub, drafts, page)."""

from __future__ import annotations

from processors.records import ChatDelta, new_attempt_id


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


def test_an_attempt_that_started_before_the_one_shown_is_dropped_even_from_seq_0() -> None:
    """Attempt ids begin with their start time: a zombie writer (judged dead, alive after all) whose
    first piece reaches a reader after its successor's must not take the text back."""
    older, newer = new_attempt_id(1_700_000_000_000), new_attempt_id(1_700_000_020_000)
    assert older < newer and len(older) == 22
    assert piece(0, newer).step(older, 3) == "restart"  # the successor replaces the zombie's text
    assert piece(0, older).step(newer, 1) == "drop"  # the zombie's first piece, late
    assert piece(4, older).step(newer, 1) == "drop"
    assert piece(2, newer).step(newer, 1) == "append"
    # ids without a start time (v2 writers before ordered ids) keep the seq-0 rule
    assert piece(0, "a1b2c3d4e5f6").step(newer, 1) == "restart"
    assert piece(0, older).step("a1b2c3d4e5f6", 1) == "restart"


def test_attempt_ids_of_one_writer_sort_by_start() -> None:
    ids = [new_attempt_id() for _ in range(3)]
    assert all(i[:13].isdigit() and i[13] == "-" for i in ids)
    assert new_attempt_id(1) < new_attempt_id(2) < new_attempt_id(10**12)
