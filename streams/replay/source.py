"""Which turns a replay runs: selected from a namespace's ``chat.inbound``, or the labelled question set.

Order: each partition is read in offset order (a session lives on one partition, so that is the
session's order) and partitions are merged by ``sent_at``; ``heapq.merge`` never reorders within one
input, so every session keeps its original order even when clocks disagree.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from processors.records import ChatRequest
from streams.codec import Codec, DecodeError
from streams.config import Settings
from streams.topic_reader import read_topic

LABELS = Path(__file__).resolve().parents[1] / "demo" / "labels.jsonl"
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: str | None, *, now_ms: int | None = None) -> int | None:
    """Epoch ms from ``2026-12-01T10:00`` (UTC unless it says otherwise), epoch ms, or ``2h`` ago."""
    if value is None or value == "":
        return None
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    match = _RELATIVE.match(value.strip())
    if match:
        return now_ms - int(float(match.group(1)) * _UNIT_S[match.group(2)] * 1000)
    if value.isdigit():
        return int(value)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a time: use ISO 8601 (2026-12-01T10:00), epoch ms, or 30m/2h/1d ago") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp() * 1000)


@dataclass
class Selection:
    """Filters of a replay; empty ones select everything."""

    since_ms: int | None = None
    until_ms: int | None = None
    sessions: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)
    limit: int | None = None

    def matches(self, request: ChatRequest) -> bool:
        if self.since_ms is not None and request.sent_at < self.since_ms:
            return False
        if self.until_ms is not None and request.sent_at >= self.until_ms:
            return False
        if self.sessions and request.session_id not in self.sessions:
            return False
        if self.channels and request.channel not in self.channels:
            return False
        if self.tenants and request.tenant not in self.tenants:
            return False
        return True

    def apply(self, ordered: Iterable[ChatRequest]) -> list[ChatRequest]:
        out, seen = [], set()
        for request in ordered:
            if request.message_id in seen or not self.matches(request):
                continue  # a channel retry published the same message_id twice: replay it once
            seen.add(request.message_id)
            out.append(request)
            if self.limit is not None and len(out) >= self.limit:
                break
        return out

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def read_inbound(settings: Settings, codec: Codec) -> list[ChatRequest]:
    """Every decodable request of ``settings.topics.inbound``, in replay order (see module doc)."""
    per_partition: dict[int, list[ChatRequest]] = {}
    for msg in read_topic(settings, settings.topics.inbound, timeout_s=15.0):
        try:
            request = codec.decode(msg.value(), ChatRequest)
        except DecodeError:
            continue  # undecodable input is in the dead-letter topic already; nothing to replay
        per_partition.setdefault(msg.partition(), []).append(request)
    return list(heapq.merge(*per_partition.values(), key=lambda r: r.sent_at))


def select(settings: Settings, codec: Codec, selection: Selection) -> list[ChatRequest]:
    return selection.apply(read_inbound(settings, codec))


@dataclass
class Label:
    """One labelled question (see ``streams/demo/labels.jsonl``)."""

    id: str
    question: str
    relevant: list[str] = field(default_factory=list)
    reference: str | None = None
    unanswerable: bool = False
    session: str | None = None
    turn: int = 1
    split: str | None = None  # "fit" | "held-out"; default by hash (streams.evaluation.split)


def load_labels(path: str | Path = LABELS) -> list[Label]:
    labels = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            label = Label(**{k: v for k, v in data.items() if k in Label.__dataclass_fields__})
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{lineno}: not a label ({exc})") from exc
        if not label.question.strip():
            raise ValueError(f"{path}:{lineno}: empty question")
        if not label.unanswerable and not label.relevant:
            raise ValueError(f"{path}:{lineno}: an answerable label needs relevant doc ids")
        labels.append(label)
    return labels


def label_requests(labels: list[Label], *, tenant: str, channel: str = "web", start_ms: int | None = None) -> list[ChatRequest]:
    """The labelled questions as turns: message_id = label id, one session per conversation."""
    start_ms = start_ms if start_ms is not None else int(time.time() * 1000)
    out = []
    for i, label in enumerate(labels):
        session = label.session or label.id
        out.append(
            ChatRequest(
                message_id=label.id,
                session_id=f"labels:{session}",
                user_id=f"labels-{session}",
                channel=channel,
                text=label.question,
                sent_at=start_ms + i,
                tenant=tenant,
            )
        )
    return out
