"""Replay building blocks without services: overrides, selection and order, the journal, the guards."""

from __future__ import annotations

import asyncio
import heapq

import pytest

from processors.records import ChatRequest
from streams.replay import overrides as ov
from streams.replay.journal import Manifest, PublishedLog
from streams.replay.namespace import ReplayNamespaceError, is_replay_namespace, refuse_replay_namespace, replay_prefix, run_prefix
from streams.replay.source import LABELS, Selection, label_requests, load_labels, parse_time


def test_overrides_from_sections_and_flat_keys(tmp_path, monkeypatch):
    path = tmp_path / "o.toml"
    path.write_text(
        '[llm]\nmodel = "gpt-4o"\nbase_url = "http://127.0.0.1:9/v1"\n'
        '[retrieval]\nalpha = 0.0\ntop_k = 1\n[history]\npolicy = "full"\n'
        '[validation]\nmin_groundedness = 0.5\n[prompt]\nsystem_prompt = "Be brief."\n'
        'not_found_replies = {acme = "Nothing on that."}\n'
    )
    got = ov.load(path)
    assert got == {
        "llm_model": "gpt-4o", "llm_base_url": "http://127.0.0.1:9/v1", "retrieval_alpha": 0.0, "retrieval_top_k": 1,
        "history_policy": "full", "min_groundedness": 0.5, "system_prompt": "Be brief.",
        "not_found_replies": {"acme": "Nothing on that."},
    }
    env = ov.to_env(got)
    assert env["CHATSTREAM_RETRIEVAL_TOP_K"] == "1"
    assert env["CHATSTREAM_NOT_FOUND_REPLIES"] == '{"acme": "Nothing on that."}'
    from streams.config import Settings

    for key, value in env.items():  # what the replay's worker process sees
        monkeypatch.setenv(key, value)
    child = Settings()
    assert child.history_policy == "full" and child.not_found_replies == {"acme": "Nothing on that."}
    assert child.retrieval_top_k == 1 and child.llm_model == "gpt-4o"


@pytest.mark.parametrize(
    "text, error",
    [
        ("[retrieval]\nalpah = 0.5\n", "unknown key"),
        ("retreival_alpha = 0.5\n", "unknown settings"),
        ("topic_prefix = 'x.'\n", "cannot override"),
        ("[history]\npolicy = 'everything'\n", "history_policy"),
        ("[retrieval]\ntop_k = 'many'\n", "retrieval_top_k"),
    ],
)
def test_bad_overrides_are_refused_clearly(tmp_path, text, error):
    path = tmp_path / "o.toml"
    path.write_text(text)
    with pytest.raises(ov.OverrideError, match=error):
        ov.load(path)


def _req(mid, session, sent, channel="web", tenant="default"):
    return ChatRequest(mid, session, "u", channel, "hi", sent, tenant=tenant)


def test_selection_filters_limits_and_drops_repeated_ids():
    reqs = [_req("a", "s1", 10), _req("b", "s2", 20, "slack"), _req("a", "s1", 10), _req("c", "s1", 30, tenant="acme"), _req("d", "s3", 40)]
    assert [r.message_id for r in Selection().apply(reqs)] == ["a", "b", "c", "d"]
    assert [r.message_id for r in Selection(since_ms=20, until_ms=40).apply(reqs)] == ["b", "c"]
    assert [r.message_id for r in Selection(channels=["slack"]).apply(reqs)] == ["b"]
    assert [r.message_id for r in Selection(tenants=["acme"]).apply(reqs)] == ["c"]
    assert [r.message_id for r in Selection(sessions=["s1"], limit=1).apply(reqs)] == ["a"]


def test_merge_keeps_each_sessions_order_even_with_clock_skew():
    # partition 0 holds session s1 whose second turn has an *earlier* clock than its first
    p0 = [_req("s1-1", "s1", 50), _req("s1-2", "s1", 40)]
    p1 = [_req("s2-1", "s2", 45), _req("s2-2", "s2", 60)]
    merged = [r.message_id for r in heapq.merge(p0, p1, key=lambda r: r.sent_at)]
    assert merged.index("s1-1") < merged.index("s1-2") and merged.index("s2-1") < merged.index("s2-2")


def test_parse_time():
    assert parse_time("2026-12-01T00:00") == 1796083200000
    assert parse_time("2h", now_ms=10_000_000) == 10_000_000 - 7_200_000
    assert parse_time("1700000000000") == 1700000000000
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday-ish")


def test_bundled_labels_meet_the_issue_sizes_and_become_turns():
    labels = load_labels(LABELS)
    answerable = [label for label in labels if not label.unanswerable]
    assert len(answerable) >= 60 and sum(label.unanswerable for label in labels) >= 20
    assert any(label.session for label in labels)  # multi-turn follow-ups
    reqs = label_requests(labels, tenant="default", start_ms=0)
    assert [r.message_id for r in reqs] == [label.id for label in labels]
    conv = [r for r in reqs if r.session_id == "labels:conv-admin"]
    assert len(conv) == 6 and [r.sent_at for r in conv] == sorted(r.sent_at for r in conv)


def test_journal_remembers_what_was_published(tmp_path):
    log = PublishedLog(tmp_path)
    log.add("m1")
    log.add("m2")
    log.close()
    again = PublishedLog(tmp_path)
    assert "m1" in again and "m2" in again and "m3" not in again
    again.close()
    manifest = Manifest("n", "replay-n.", "production", {"limit": 2}, {"retrieval_top_k": 1}, [_req("a", "s", 1)], 5)
    manifest.save(tmp_path)
    loaded = Manifest.load(tmp_path)
    assert loaded.requests[0].message_id == "a" and loaded.overrides == {"retrieval_top_k": 1}


def test_namespaces_and_the_guard_of_deliver_and_sinks():
    assert replay_prefix("v2") == "replay-v2."
    assert run_prefix("production") == "" and run_prefix("v2") == "replay-v2." and run_prefix("bench-1.") == "bench-1."
    assert is_replay_namespace("replay-v2.") and not is_replay_namespace("")
    with pytest.raises(ValueError):
        replay_prefix("no spaces allowed")
    refuse_replay_namespace("", "deliver")  # production: fine
    with pytest.raises(ReplayNamespaceError, match="deliver refuses"):
        refuse_replay_namespace("replay-v2.", "deliver")


def test_deliver_and_sinks_refuse_a_replay_namespace_before_touching_anything():
    from connectors.delivery.deliver import run as deliver
    from connectors.sinks.escalations import run as escalations
    from connectors.sinks.transcripts import run as transcripts
    from streams.config import Settings

    # unreachable Kafka and Redis: the guard must fire before any client is built
    settings = Settings(topic_prefix="replay-x.", kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1/0")
    for call in (deliver(settings), escalations(settings, "http://127.0.0.1:1/"), transcripts(settings, "http://127.0.0.1:1/")):
        with pytest.raises(ReplayNamespaceError):
            asyncio.run(call)


def test_redis_keys_are_namespaced_by_topic_prefix():
    from processors.session import redis_key_prefix, session_store_from_settings
    from streams.config import Settings

    assert redis_key_prefix("") == "cs:"
    store = session_store_from_settings(object.__new__(_FakeRedis), Settings(topic_prefix="replay-v2."))
    assert store._session_keys("s")[0] == "cs:replay-v2.s:{s}:turns"
    assert store._replied_key("m") == "cs:replay-v2.replied:m" and store._bucket_key("u") == "cs:replay-v2.rl:u"
    full = session_store_from_settings(object.__new__(_FakeRedis), Settings(history_policy="full", full_history_max_turns=99))
    assert full.history_turns == 99


class _FakeRedis:
    def register_script(self, script):  # the store registers its Lua scripts at construction
        return object()
