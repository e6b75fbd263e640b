"""The worker's start-up heap leaves the collector's passes (streams.runtime.heap)."""

from __future__ import annotations

import gc

from streams.runtime.heap import YOUNG_THRESHOLD, freeze_startup_heap


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    before = gc.get_threshold()
    long_lived = [{"i": i} for i in range(1000)]  # stands for the clients and models built at start
    try:
        frozen = freeze_startup_heap()
        # Not compared for equality with a second count: a frozen object that another thread (a client
        # left by an earlier test) frees in between leaves the permanent generation, so the count can fall.
        assert frozen >= len(long_lived)
        assert gc.get_freeze_count() >= len(long_lived)
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        assert not any(obj is long_lived for obj in gc.get_objects(generation=2))  # skipped by full passes
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
