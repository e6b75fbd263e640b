"""The fit / held-out split of a labelled set, the threshold fitted on one part, and both parts reported."""

from __future__ import annotations

import dataclasses

import pytest

from streams.evaluation.calibrate import Point, fitted_threshold, rates, table
from streams.evaluation.metrics import summarize
from streams.evaluation.split import FIT, HELD_OUT, part_of
from streams.replay.source import LABELS, Label, load_labels
from tests.streams.evaluation.test_metrics import LABELS as HAND_LABELS
from tests.streams.evaluation.test_metrics import PRICES, _run


def test_the_shipped_set_is_split_by_conversation_with_both_kinds_in_each_part():
    labels = load_labels(LABELS)
    parts = {label.id: part_of(label) for label in labels}
    by_session: dict[str, set[str]] = {}
    for label in labels:
        if label.session:
            by_session.setdefault(label.session, set()).add(parts[label.id])
    assert all(len(p) == 1 for p in by_session.values())  # a conversation is never cut in two
    held = [label for label in labels if parts[label.id] == HELD_OUT]
    assert 0.25 <= len(held) / len(labels) <= 0.45
    assert sum(label.unanswerable for label in held) >= 8  # enough uncovered questions to measure declines
    assert sum(not label.unanswerable for label in held) >= 30
    assert any(label.session for label in held)  # follow-ups are held out too


def test_the_split_is_stable_and_an_explicit_part_wins():
    label = Label("lab-x", "how do i export", ["data-export"])
    assert part_of(label) == part_of(dataclasses.replace(label, question="something else"))  # by id, not text
    assert part_of(dataclasses.replace(label, split=HELD_OUT)) == HELD_OUT
    assert part_of(dataclasses.replace(label, split=FIT)) == FIT
    with pytest.raises(ValueError, match="split"):
        part_of(dataclasses.replace(label, split="test"))


def _points() -> list[Point]:
    # fit: uncovered at 0.70/0.76, covered at 0.84/0.90; held-out: one uncovered above the fitted cut
    fit = [Point("u1", True, 0.70, False), Point("u2", True, 0.76, False),
           Point("a1", False, 0.84, True), Point("a2", False, 0.90, True)]
    held = [Point("u3", True, 0.86, False, HELD_OUT), Point("a3", False, 0.95, True, HELD_OUT)]
    return fit + held


def test_the_threshold_is_fitted_on_the_fit_part_only():
    points = _points()
    threshold = fitted_threshold(points)
    assert 0.76 < threshold <= 0.84  # the held-out uncovered question at 0.86 did not move it
    held = [p for p in points if p.part == HELD_OUT]
    assert rates(held, threshold) == (0.0, 1.0)  # reported as it is: the held-out decline rate is 0 %
    text = table(points, current=0.82)
    assert "fitted on 4 (fit), 2 held-out" in text and f"{threshold:5.2f}" in text and "<- fitted on fit" in text


def test_the_summary_reports_both_parts_and_names_the_misses():
    labels = [dataclasses.replace(HAND_LABELS[0], split=FIT), dataclasses.replace(HAND_LABELS[1], split=HELD_OUT),
              dataclasses.replace(HAND_LABELS[2], split=HELD_OUT)]
    s = summarize(_run(), PRICES, labels)
    assert s["fit_answered_right_rate"] == 1.0 and s["fit_answerable"] == 1  # q1 right
    assert s["held_out_answered_right_rate"] == 0.0 and s["held_out_answerable"] == 1  # q2 cites the wrong article
    assert s["held_out_unanswerable_declined_rate"] == 1.0 and s["held_out_unanswerable"] == 1
    assert s["answerable_missed"] == "q2" and s["unanswerable_answered"] == ""
