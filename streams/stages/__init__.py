"""The four pipeline stages, each a thin adapter from a topic to one processor.

Their order, sources and outputs are in ``streams.pipeline`` (the one table); these names are kept
for the callers that import them from here.
"""

from __future__ import annotations

from streams.pipeline import STAGE_NAMES, build_stages

__all__ = ["STAGE_NAMES", "build_stages"]
