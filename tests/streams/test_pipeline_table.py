"""The pipeline table is the one description of the pipeline's order: everything reads it."""

from __future__ import annotations

from streams.config import Settings
from streams.pipeline import (
    EDGES,
    LLM_TIMING,
    STAGE_NAMES,
    STAGES,
    TIMING_KEYS,
    TIMING_PARTS,
    build_stages,
    describe,
    source_topic,
    stage_sources,
    topic_names,
)
from streams.topics import topic_specs


def test_stages_chain_topic_to_topic() -> None:
    # each stage after the first reads what the one before it writes
    for before, after in zip(STAGES, STAGES[1:]):
        assert after.source in before.outputs, (before.name, after.name)
    assert STAGE_NAMES == ("enrich", "retrieve", "generate", "validate")


def test_topic_names_follow_the_prefix_and_topics_create_reads_them() -> None:
    settings = Settings(topic_prefix="replay-7.")
    assert all(t.startswith("replay-7.") for t in topic_names(settings))
    assert [s.topic for s in topic_specs(settings)] == topic_names(settings)
    assert stage_sources(settings) == [f"replay-7.chat.{s.source}" for s in STAGES]


def test_built_stages_read_their_source_from_the_table() -> None:
    settings = Settings(topic_prefix="t.")
    stages = build_stages(settings, ["validate", "enrich"])
    assert [s.name for s in stages] == ["enrich", "validate"]  # pipeline order
    assert [s.source for s in stages] == [source_topic(settings, "enrich"), "t.chat.generated"]


def test_edges_are_described_with_the_stages() -> None:
    text = describe()
    for name in [*STAGE_NAMES, *(e.name for e in EDGES)]:
        assert name in text


def test_stage_classes_carry_the_table_names_and_timing_keys_follow_the_order() -> None:
    # a stage writes its processing time under its own name; the table and the class must agree
    assert [spec.load().name for spec in STAGES] == list(STAGE_NAMES)
    assert TIMING_KEYS == ("enrich", "retrieve", "generate", LLM_TIMING, "validate")
    assert TIMING_PARTS == {LLM_TIMING}
