"""Counters of what the gateway accepted and refused, exposed at ``/v1/stats``.

Refusals (forged, replayed, expired, oversized, rate-limited) are the signal an operator needs when
an attacker knocks or a channel is misconfigured; a plain dict is enough until the OpenTelemetry
metrics take these names over.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

log = logging.getLogger("chatstream.gateway")


class Stats:
    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))

    def refuse(self, channel: str, reason: str, status: int, peer: str | None, detail: str = "") -> None:
        """Count and log a refused request; ``detail`` must never contain a secret."""
        self.incr(f"refused.{channel}.{reason}")
        log.warning("refused %s request from %s: %s (%d)%s", channel, peer or "?", reason, status,
                    f" {detail}" if detail else "")
