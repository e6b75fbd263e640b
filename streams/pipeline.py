"""The pipeline's order, written once: which stage reads which topic and writes which topics.

Everything that needs to know the shape of the pipeline reads this table instead of repeating it:
``build_stages`` and the worker (which sources to subscribe), ``worker --stage`` (its choices),
``topics create/check`` (which topics exist), consumer lag (which topics a stage group reads), the
benchmark, ``stats`` and ``eval`` (the stage names and the keys of a reply's ``stage_ms``) and the docs
(``describe``). Topics are named here by their short name; the real name
comes from ``settings.topics`` so that a prefix (a replay or test namespace) applies everywhere.

The edges (deliver, the sinks, the gateway's reply tail) are listed too: they run on the same
consumer runtime, each in its own consumer group (or none, for the tail).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streams.config import TOPIC_NAMES, Settings

if TYPE_CHECKING:
    from streams.stage import Stage


@dataclass(frozen=True)
class StageSpec:
    """One topic-to-topic step of the pipeline, run by ``chatstream worker``."""

    name: str
    source: str  # short topic name (an attribute of ``settings.topics``)
    outputs: tuple[str, ...]
    stage_class: str  # "module:Class", imported only when the stage is built (heavy clients)
    about: str
    # parts of the stage's processing time measured on their own, under these keys of a reply's
    # ``stage_ms`` (they are inside the stage's own time, not added to it)
    parts: tuple[str, ...] = ()

    def load(self) -> type["Stage"]:
        module, _, cls = self.stage_class.partition(":")
        return getattr(importlib.import_module(module), cls)


@dataclass(frozen=True)
class EdgeSpec:
    """A consumer at the edge of the pipeline: it reads topics and acts outside Kafka."""

    name: str
    sources: tuple[str, ...]
    outputs: tuple[str, ...]
    command: str
    about: str


# A reply's ``stage_ms`` holds each stage's processing time under the stage's name, and the LLM
# call(s) under this key (measured inside generate).
LLM_TIMING = "llm"

# every stage may also write chat.deadletter (bad input, records that break a rule)
STAGES: tuple[StageSpec, ...] = (
    StageSpec("enrich", "inbound", ("enriched", "outbound", "deadletter"), "streams.stages.enrich:EnrichStage",
              "validate, rate-limit, drop repeats, add session history (rejections reply at once)"),
    StageSpec("retrieve", "enriched", ("retrieved", "deadletter"), "streams.stages.retrieve:RetrieveStage",
              "hybrid search of the knowledge base (Weaviate + MiniLM embeddings)"),
    StageSpec("generate", "retrieved", ("generated", "deltas", "deadletter"), "streams.stages.generate:GenerateStage",
              "answer with the LLM, grounded in the retrieved passages; stream its pieces", parts=(LLM_TIMING,)),
    StageSpec("validate", "generated", ("outbound", "escalations", "deadletter"), "streams.stages.validate:ValidateStage",
              "PII, rules and groundedness checks; reply or escalate"),
)

EDGES: tuple[EdgeSpec, ...] = (
    EdgeSpec("deliver", ("outbound", "deltas"), ("deadletter",), "chatstream deliver",
             "send each reply through its channel's API (Slack, WhatsApp, Teams); edit a placeholder as it streams"),
    EdgeSpec("sink.escalations", ("escalations",), ("deadletter",), "chatstream sink escalations",
             "one helpdesk ticket per escalation"),
    EdgeSpec("sink.transcripts", ("inbound", "outbound"), ("deadletter",), "chatstream sink transcripts",
             "a finished conversation, whole, to the CRM"),
    EdgeSpec("gateway.sse", ("outbound", "deltas"), (), "chatstream gateway",
             "web replies to the browsers as server-sent events (group-less tail)"),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)

# The keys of a reply's ``stage_ms`` in pipeline order (bench, stats and eval print them so), and
# those that are parts of a stage's time: a sum of "busy" time counts either the part or its stage.
TIMING_KEYS: tuple[str, ...] = tuple(key for s in STAGES for key in (s.name, *s.parts))
TIMING_PARTS: frozenset[str] = frozenset(part for s in STAGES for part in s.parts)

# The gateway writes inbound (turns) and feedback (ratings); both appear in no stage's outputs.
TOPICS: tuple[str, ...] = TOPIC_NAMES


def stage_spec(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown stage {name!r}; choose from {', '.join(STAGE_NAMES)}")


def source_topic(settings: Settings, stage_name: str) -> str:
    return getattr(settings.topics, stage_spec(stage_name).source)


def stage_sources(settings: Settings) -> list[str]:
    """The topics the worker's consumer group reads (consumer lag is measured on these)."""
    return [getattr(settings.topics, s.source) for s in STAGES]


def topic_names(settings: Settings) -> list[str]:
    """Every topic of the pipeline, real names (with the settings' prefix)."""
    return [getattr(settings.topics, short) for short in TOPICS]


def build_stages(settings: Settings, names: list[str] | tuple[str, ...] = STAGE_NAMES) -> list["Stage"]:
    """The stages to run in this process, in pipeline order."""
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGE_NAMES)}")
    return [spec.load()(settings) for spec in STAGES if spec.name in names]


def describe() -> str:
    """The table as text (``chatstream worker --help``, README)."""
    lines = []
    for s in STAGES:
        lines.append(f"{s.name:<18} {s.source:>11} -> {', '.join(s.outputs):<32} {s.about}")
    for e in EDGES:
        lines.append(f"{e.name:<18} {', '.join(e.sources):>11} -> {', '.join(e.outputs) or '(browser)':<32} {e.about}")
    return "\n".join(lines)


def _check_table() -> None:
    known = set(TOPICS)
    for s in STAGES:
        bad = {s.source, *s.outputs} - known
        if bad:
            raise AssertionError(f"stage {s.name} names unknown topics {bad}")
    for e in EDGES:
        bad = {*e.sources, *e.outputs} - known
        if bad:
            raise AssertionError(f"edge {e.name} names unknown topics {bad}")


_check_table()
