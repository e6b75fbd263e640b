"""Typed records that flow between stages, mirroring ``schemas/*.avsc`` field for field.

Processors work on these dataclasses, never on bytes or Kafka messages, so they can be unit-tested
and reused by replay, evaluation and benchmarks. ``to_avro``/``from_avro`` are the only bridge to
the wire format.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar


def now_ms() -> int:
    return int(time.time() * 1000)


class Status(str, enum.Enum):
    ANSWERED = "ANSWERED"
    FALLBACK = "FALLBACK"
    ESCALATED = "ESCALATED"
    BLOCKED = "BLOCKED"
    RATE_LIMITED = "RATE_LIMITED"
    REJECTED = "REJECTED"


class FeedbackKind(str, enum.Enum):
    THUMBS_UP = "THUMBS_UP"
    THUMBS_DOWN = "THUMBS_DOWN"
    CSAT = "CSAT"


@dataclass
class ChatRequest:
    message_id: str
    session_id: str
    user_id: str
    channel: str
    text: str
    sent_at: int
    metadata: dict[str, str] = field(default_factory=dict)
    tenant: str = "default"


@dataclass
class HistoryTurn:
    role: str
    text: str
    message_id: str = ""
    at: int = 0


@dataclass
class Passage:
    doc_id: str
    chunk_id: str
    title: str
    source: str
    text: str
    score: float
    # absolute relevance (cosine of query and chunk embeddings); None when not measured
    relevance: float | None = None


@dataclass
class Citation:
    doc_id: str
    title: str
    source: str
    score: float


@dataclass
class ChatTurn:
    request: ChatRequest
    history: list[HistoryTurn] = field(default_factory=list)
    summary: str = ""
    session_failures: int = 0
    passages: list[Passage] = field(default_factory=list)
    retrieval_ok: bool = True
    retrieval_error: str | None = None
    answerable: bool = True
    answer: str | None = None
    provider: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_latency_ms: int = 0
    degraded: bool = False
    generation_error: str | None = None
    stage_ms: dict[str, int] = field(default_factory=dict)


@dataclass
class ChatResponse:
    message_id: str
    session_id: str
    user_id: str
    channel: str
    text: str
    status: Status
    citations: list[Citation] = field(default_factory=list)
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    created_at: int = field(default_factory=now_ms)
    metadata: dict[str, str] = field(default_factory=dict)
    tenant: str = "default"
    reason: str | None = None
    groundedness: float = 0.0
    stage_ms: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_request(cls, request: ChatRequest, text: str, status: Status, **extra: Any) -> "ChatResponse":
        """A reply addressed back to where the request came from."""
        created = now_ms()
        return cls(
            message_id=request.message_id,
            session_id=request.session_id,
            user_id=request.user_id,
            channel=request.channel,
            text=text,
            status=status,
            created_at=created,
            latency_ms=max(0, created - request.sent_at),
            metadata=dict(request.metadata),
            tenant=request.tenant,
            **extra,
        )


@dataclass
class ChatEscalation:
    message_id: str
    session_id: str
    user_id: str
    channel: str
    reason: str
    transcript: list[HistoryTurn] = field(default_factory=list)
    created_at: int = field(default_factory=now_ms)
    tenant: str = "default"
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class KafkaHeader:
    key: str
    value: bytes | None = None


@dataclass
class DeadLetter:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    stage: str
    error_class: str
    error_message: str
    headers: list[KafkaHeader] = field(default_factory=list)
    failed_at: int = field(default_factory=now_ms)
    message_id: str | None = None
    replay_count: int = 0


@dataclass
class ChatFeedback:
    message_id: str
    session_id: str
    user_id: str
    channel: str
    kind: FeedbackKind
    score: int
    comment: str = ""
    created_at: int = field(default_factory=now_ms)


@dataclass
class ChatDelta:
    """A provisional, already redacted piece of an answer on chat.deltas (see schemas/chat_delta.avsc)."""

    message_id: str
    session_id: str
    channel: str
    seq: int
    text: str
    final: bool = False
    created_at: int = field(default_factory=now_ms)
    metadata: dict[str, str] = field(default_factory=dict)
    tenant: str = "default"
    attempt: str = ""  # the generation: a turn generated again after a crash streams under another one

    def step(self, attempt: str | None, seq: int) -> Literal["append", "restart", "drop"]:
        """What a reader that has shown ``attempt`` up to ``seq`` (None, -1: nothing yet) does with this piece.

        One rule for every reader (the gateway's SSE hub, deliver's drafts; the web page has it in
        JavaScript): a turn generated again after its worker died streams another attempt from seq 0,
        which replaces the text shown so far; a repeat, or a late piece of a superseded attempt, is
        dropped, and so is any piece of an attempt that started before the one shown (``new_attempt_id``).
        Without it the reader showed the first attempt's start with the second one's end.
        """
        if attempt is None or seq < 0:
            return "append"
        if _started_before(self.attempt, attempt):
            return "drop"  # even its first piece: a zombie writer that shows up after its successor began
        if self.seq == 0 and self.attempt != attempt:
            return "restart"
        if self.attempt == attempt or not attempt:  # "": shown by a reader that kept no attempt (before v2)
            return "append" if self.seq > seq else "drop"
        return "drop"


def new_attempt_id(started_ms: int | None = None) -> str:
    """A generation's id, ordered by when it started: ``<13-digit ms>-<8 hex>``.

    Why ordered: a turn is generated again only after its first worker was judged dead, so the later
    start is the attempt that counts; a reader can then drop the older one's pieces even when the
    first of them reaches it late (a writer that was alive after all, its first token slow).
    """
    return f"{now_ms() if started_ms is None else started_ms:013d}-{uuid.uuid4().hex[:8]}"


def _started_before(attempt: str, other: str) -> bool:
    """True when both ids are ordered ones (``new_attempt_id``) and ``attempt`` began first; ids of
    writers before ordered ids carry no time and say nothing (the seq-0 rule alone applies to them)."""
    return _is_ordered(attempt) and _is_ordered(other) and attempt < other


def _is_ordered(attempt: str) -> bool:
    return len(attempt) > 14 and attempt[13] == "-" and attempt[:13].isdigit()


# --- Avro bridge ---------------------------------------------------------------------------------

RECORD_TYPES: dict[str, type] = {
    "ChatRequest": ChatRequest,
    "ChatTurn": ChatTurn,
    "ChatResponse": ChatResponse,
    "ChatEscalation": ChatEscalation,
    "DeadLetter": DeadLetter,
    "ChatFeedback": ChatFeedback,
    "ChatDelta": ChatDelta,
}

_NESTED: dict[tuple[type, str], type] = {
    (ChatTurn, "request"): ChatRequest,
    (ChatTurn, "history"): HistoryTurn,
    (ChatTurn, "passages"): Passage,
    (ChatResponse, "citations"): Citation,
    (ChatResponse, "status"): Status,
    (ChatEscalation, "transcript"): HistoryTurn,
    (DeadLetter, "headers"): KafkaHeader,
    (ChatFeedback, "kind"): FeedbackKind,
}

T = TypeVar("T")


# Field names per record class, read once: ``dataclasses.fields`` builds a tuple on every call, and
# these two functions run for every record of every stage (a third of the Avro cost per turn).
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
# Exact types passed through as they are (``Status`` is a str subclass, so it is not among them).
_PLAIN = frozenset({str, int, float, bool, bytes, type(None)})


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _to_plain(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list:
        return [_to_plain(v) for v in value]
    if kind is dict:
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {name: _to_plain(getattr(value, name)) for name in _field_names(kind)}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def to_avro(record: Any) -> dict[str, Any]:
    """A dataclass record as the plain dict fastavro writes (enums as their symbol)."""
    return _to_plain(record)


def from_avro(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a dataclass record from what fastavro read (unknown fields are ignored)."""
    kwargs: dict[str, Any] = {}
    for name in _field_names(cls):
        if name not in data:
            continue
        value = data[name]
        if isinstance(value, _dt.datetime):  # fastavro reads timestamp-millis as datetime
            value = int(value.timestamp() * 1000)
        nested = _NESTED.get((cls, name))
        if nested is not None and value is not None:
            if isinstance(value, list):
                value = [from_avro(nested, v) if isinstance(v, dict) else nested(v) for v in value]
            elif isinstance(value, dict):
                value = from_avro(nested, value)
            else:
                value = nested(value)
        kwargs[name] = value
    return cls(**kwargs)
