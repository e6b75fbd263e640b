"""Which failures are worth waiting out: the one classifier lives in ``processors.backoff``.

A transient failure (a server down or slow) must never dead-letter a good turn: the stage runner
retries with backoff and the stage stops pulling meanwhile. Anything else is a property of the
record and goes to the dead-letter topic at once.
"""

from __future__ import annotations

from processors.backoff import is_transient

__all__ = ["is_transient"]
