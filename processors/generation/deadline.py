"""One generation budget per turn instead of timeouts stacked per call, attempt and provider.

Why: with a per-call timeout, retries and failover each adding their own, a provider that accepts
connections and never answers cost a user 46 s. A turn now carries one ``TurnDeadline``:

* ``budget_s`` bounds everything that happens *before* an answer streams: attempts, retry waits,
  failover to the next provider. No attempt starts and no wait runs past it.
* ``first_token_s`` is how long one provider may take to produce its first token (counted from its
  first attempt). Past it the provider is taken as hung for this turn: no retry on it, failover or
  the fallback answers. A few seconds, so a hung LLM costs seconds, not minutes.
* ``stall_s`` is the longest gap between two tokens once an answer streams. A long answer that
  keeps coming is never cut off by the budget; only one that stops coming is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TurnDeadline:
    budget_s: float = math.inf
    first_token_s: float = math.inf
    stall_s: float = math.inf
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=math.nan)
    first_token_at: float | None = None

    def __post_init__(self) -> None:
        if self.budget_s <= 0 or self.first_token_s <= 0 or self.stall_s <= 0:
            raise ValueError("budget_s, first_token_s and stall_s must be positive")
        if math.isnan(self.started):
            self.started = self.clock()

    @property
    def expires_at(self) -> float:
        return self.started + self.budget_s

    def remaining(self) -> float:
        """Seconds of budget left for attempts and waits (never negative)."""
        return max(0.0, self.expires_at - self.clock())

    def first_token_due(self, provider_started: float) -> float:
        """When a provider first tried at ``provider_started`` must have streamed its first token."""
        return min(provider_started + self.first_token_s, self.expires_at)

    def may_wait(self, seconds: float) -> bool:
        """Can a retry wait ``seconds`` and still start an attempt inside the budget?"""
        return self.clock() + seconds < self.expires_at

    def mark_first_token(self) -> float:
        """Record the turn's first token (once); returns the time to first token in seconds."""
        now = self.clock()
        if self.first_token_at is None:
            self.first_token_at = now
        return self.first_token_at - self.started

    @property
    def streaming(self) -> bool:
        return self.first_token_at is not None
