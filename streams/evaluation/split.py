"""A fixed split of a labelled set into the part thresholds are fitted on and a held-out part.

The answerability threshold (``answerability_min_relevance``) is chosen on labelled data; measured on
the same questions it flatters itself. ``chatstream eval calibrate`` fits on the ``fit`` part only and
``chatstream eval RUN`` reports both parts, so the held-out figure is what new traffic should expect.

The split is by a hash of the conversation (a label's ``session``, else its id), so a conversation
is never cut in two and the split does not change when other labels are added. A label may name its
part explicitly (``"split": "fit"`` or ``"held-out"`` in the JSONL), which wins over the hash.
"""

from __future__ import annotations

import hashlib

FIT = "fit"
HELD_OUT = "held-out"
PARTS = (FIT, HELD_OUT)
HELD_OUT_ONE_IN = 3  # about a third of the conversations are held out


def part_of(label) -> str:  # type: ignore[no-untyped-def]  # label: streams.replay.source.Label
    """``"fit"`` or ``"held-out"`` for a label."""
    explicit = getattr(label, "split", None)
    if explicit:
        if explicit not in PARTS:
            raise ValueError(f"label {label.id}: split must be one of {PARTS}, got {explicit!r}")
        return explicit
    key = (label.session or label.id).encode("utf-8")
    return HELD_OUT if int(hashlib.sha256(key).hexdigest(), 16) % HELD_OUT_ONE_IN == 0 else FIT
