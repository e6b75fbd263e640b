"""A run's turns, read from its topics alone and joined by message id.

``chat.inbound`` gives the question and when it was offered, ``chat.generated`` what was retrieved
(doc ids, absolute relevance, whether the knowledge base covered it) and how generation went,
``chat.outbound`` the reply (status, citations, tokens, per-stage times, groundedness),
``chat.escalations`` and ``chat.feedback`` the rest. Validation failures by rule are not on the
topics except as the reply's reason, so they are recomputed with the run's own validator settings
(the replay's manifest overrides) from the generated turn: the validator is deterministic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.records import ChatEscalation, ChatFeedback, ChatRequest, ChatResponse, ChatTurn
from processors.relevance import turn_score
from processors.retrieval import build_query, latest_text
from streams.codec import Codec, DecodeError, make_codec
from streams.config import Settings
from streams.evaluation.metrics import TurnRecord
from streams.replay.journal import replay_dir
from streams.replay.namespace import PRODUCTION, REPLAY_PREFIX, run_prefix
from streams.replay.runner import REPLAY_PUBLISHED_AT
from streams.topic_reader import TopicMissing, read_topic


@dataclass
class Run:
    name: str
    topic_prefix: str
    records: list[TurnRecord]
    overrides: dict[str, Any] = field(default_factory=dict)


def _read(settings: Settings, codec: Codec, topic: str, cls: type) -> list:
    out = []
    try:
        for msg in read_topic(settings, topic, timeout_s=15.0):
            try:
                out.append(codec.decode(msg.value(), cls))
            except DecodeError:
                continue
    except TopicMissing:
        pass
    return out


def run_overrides(settings: Settings, name: str) -> dict[str, Any]:
    """The configuration overrides a replay ran with (empty for production)."""
    manifest = replay_dir(settings.home, name) / "manifest.json"
    if name == PRODUCTION or not manifest.exists():
        return {}
    return json.loads(manifest.read_text(encoding="utf-8")).get("overrides", {})


def build_records(
    requests: list[ChatRequest],
    turns: list[ChatTurn],
    responses: list[ChatResponse],
    escalations: list[ChatEscalation],
    feedback: list[ChatFeedback],
    validator=None,  # processors.validation.Validator, to recompute failed rules
) -> list[TurnRecord]:
    """Join the records of one run by message id (first reply wins; the pipeline makes one)."""
    first_turn = {}
    for turn in turns:
        first_turn.setdefault(turn.request.message_id, turn)
    first_reply = {}
    for response in responses:
        first_reply.setdefault(response.message_id, response)
    escalated = {e.message_id for e in escalations}
    fb: dict[str, list[tuple[str, int]]] = {}
    for f in feedback:
        fb.setdefault(f.message_id, []).append((getattr(f.kind, "value", str(f.kind)), int(f.score)))
    seen, records = set(), []
    ordered = list(requests) + [t.request for t in turns if t.request.message_id not in {r.message_id for r in requests}]
    for request in ordered:
        if request.message_id in seen:
            continue
        seen.add(request.message_id)
        record = TurnRecord(request.message_id, request.session_id, request.text, tenant=request.tenant, channel=request.channel)
        turn = first_turn.get(request.message_id)
        if turn is not None:
            record.retrieved = list(dict.fromkeys(p.doc_id for p in turn.passages))
            record.relevance = turn_score(build_query(turn), latest_text(turn), turn.passages)
            record.answerable_flag = turn.answerable
            record.provider = turn.provider
            record.llm_failed = bool(turn.generation_error) and turn.retrieval_ok and turn.answerable
            if validator is not None:
                record.failed_rules = validator.validate(turn).failed_rules
        reply = first_reply.get(request.message_id)
        if reply is not None:
            record.status = getattr(reply.status, "value", str(reply.status))
            record.reason = reply.reason
            record.answer = reply.text
            record.cited = [c.doc_id for c in reply.citations]
            record.model = reply.model or (turn.model if turn else "")
            record.prompt_tokens = reply.prompt_tokens
            record.completion_tokens = reply.completion_tokens
            record.groundedness = reply.groundedness
            record.stage_ms = dict(reply.stage_ms)
            offered = reply.metadata.get(REPLAY_PUBLISHED_AT) or request.metadata.get(REPLAY_PUBLISHED_AT)
            record.latency_ms = float(reply.created_at - int(offered)) if offered else float(reply.latency_ms)
            if turn is None and reply.reason:
                record.failed_rules = []
        record.escalated = request.message_id in escalated
        record.feedback = fb.get(request.message_id, [])
        records.append(record)
    return records


def load_run(settings: Settings, name: str, codec: Codec | None = None) -> Run:
    """Every turn of the run called ``name`` (production, a replay name, or a topic prefix)."""
    from processors.validation import Validator

    prefix = run_prefix(name)
    run_settings = settings.derive(topic_prefix=prefix)
    codec = codec or make_codec(settings)
    t = run_settings.topics
    overrides = run_overrides(settings, name)
    validator_settings = run_settings.derive(**{k: v for k, v in overrides.items() if k in type(settings).model_fields and "api_key" not in k})
    feedback_topic = t.feedback if not prefix.startswith(REPLAY_PREFIX) else settings.derive(topic_prefix="").topics.feedback
    records = build_records(
        _read(run_settings, codec, t.inbound, ChatRequest),
        _read(run_settings, codec, t.generated, ChatTurn),
        _read(run_settings, codec, t.outbound, ChatResponse),
        _read(run_settings, codec, t.escalations, ChatEscalation),
        # a replay's answers are new, but users rated the original ones: production feedback joins by message id
        _read(run_settings, codec, feedback_topic, ChatFeedback),
        Validator.from_settings(validator_settings),
    )
    return Run(name, prefix, records, overrides)


def load_records_file(path: Path) -> list[TurnRecord]:
    """Records saved with ``eval --save`` (JSON lines), for offline comparisons and tests."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            data = json.loads(line)
            data["feedback"] = [tuple(x) for x in data.get("feedback", [])]
            out.append(TurnRecord(**data))
    return out
