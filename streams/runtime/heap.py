"""Keep CPython's garbage collector from freezing the event loop for hundreds of milliseconds.

Why: a worker builds a large, long-lived object graph at start (gRPC, Weaviate, httpx, pydantic,
OpenTelemetry, fastavro schemas, the embedders' Python side). A full (generation 2) collection
walks every tracked object, and with the default thresholds it runs every few seconds, because the
objects of the turns in flight live long enough (tens of milliseconds) to be promoted out of the young
generations. Measured in a worker at 30 turns/s on the 2-core machine: 17 full collections in 40 s,
266 ms each at the median and up to 481 ms, every one on the event loop's thread; the loop's longest
stalls were exactly those collections, and each stall delays every turn in flight and queues up the
next ones (the p99 of the pipeline's overhead).

So, once the worker has started:

* ``gc.freeze()`` moves the start-up heap into the permanent generation, which collections skip
  (its objects live as long as the process anyway);
* a larger first-generation threshold (``YOUNG_THRESHOLD`` container allocations instead of 700)
  lets a turn's short-lived objects die before a young collection promotes them, so far fewer reach
  the old generations and full collections become rare and small.

Nothing else changes: reference counting still frees most objects at once, and cycles are still
collected, just in cheaper passes.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 10_000  # container allocations between young collections (CPython's default: 700)


def freeze_startup_heap(young_threshold: int = YOUNG_THRESHOLD) -> int:
    """Collect once, freeze what survives, raise the young threshold; returns the frozen object count."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
    frozen = gc.get_freeze_count()
    log.info("start-up heap frozen: %d objects skip collections; young generation threshold %d", frozen, young_threshold)
    return frozen
