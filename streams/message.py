"""The Kafka-agnostic view of one consumed record and of one record to produce.

Stages see these instead of confluent messages, so the same stage code runs under the worker, a
replay and the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class InboundMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp_ms: int = 0

    @classmethod
    def from_confluent(cls, msg: Any) -> "InboundMessage":
        """The view of a confluent-kafka message."""
        return cls(
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            key=msg.key(),
            value=msg.value(),
            headers=list(msg.headers() or []),
            timestamp_ms=_timestamp_ms(msg),
        )

    @property
    def session_key(self) -> str:
        return (self.key or b"").decode("utf-8", "replace")


@dataclass
class OutboundRecord:
    topic: str
    key: str
    record: Any  # a processors.records dataclass


def _timestamp_ms(msg: Any) -> int:
    stamp = getattr(msg, "timestamp", None)
    if stamp is None:
        return 0
    _, ms = stamp()
    return max(0, ms or 0)
