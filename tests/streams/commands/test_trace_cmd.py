"""The terminal waterfall of a trace, from Jaeger's JSON, without a Jaeger."""

from __future__ import annotations

from streams.commands.trace_cmd import SpanRow, waterfall


def test_waterfall_nests_children_under_parents_in_start_order() -> None:
    rows = [
        SpanRow("b", "a", "chat.enriched process", "chatstream-worker", 1_010_000, 50_000, None, []),
        SpanRow("a", None, "chat.inbound publish", "chatstream-cli", 1_000_000, 2_000, None, []),
        SpanRow("c", "b", "weaviate hybrid_search", "chatstream-worker", 1_020_000, 5_000, "timeout", ["retry"]),
        SpanRow("d", "a", "chat.inbound process", "chatstream-worker", 1_003_000, 4_000, None, []),
    ]
    lines = waterfall(rows)
    names = [line[:58] for line in lines[1:]]
    assert [n.strip() for n in names] == [
        "chat.inbound publish", "chat.inbound process", "chat.enriched process", "weaviate hybrid_search"
    ]
    assert lines[1].startswith("chat.inbound publish")
    assert lines[4].startswith("    weaviate hybrid_search")
    assert "20.0ms" in lines[4] and "5.0ms" in lines[4] and "ERROR timeout" in lines[4] and "[retry]" in lines[4]
