"""One user turn is one trace in Jaeger, with every hop and call in it; metrics count the turns."""

from __future__ import annotations

import asyncio
import random
import string
import time
import uuid

import httpx
import pytest
from opentelemetry import trace

from streams import tracing
from streams.client import ChatClient
from streams.topic_reader import read_topic
from tests.audit import audit_when_done, wait_idle
from tests.e2e.turns import new_request
from streams.commands.stats_cmd import scrape
from streams.commands.trace_cmd import fetch_trace, find_trace_ids
from streams.pipeline import STAGE_NAMES

pytestmark = pytest.mark.stack


def wait_for_trace(settings, message_id: str, min_spans: int, timeout_s: float = 30.0):
    base = settings.jaeger_query_url
    deadline = time.monotonic() + timeout_s
    rows = []
    while time.monotonic() < deadline:
        ids = find_trace_ids(base, message_id, ("chatstream-tests", "chatstream-worker"))
        if len(ids) == 1:
            rows = fetch_trace(base, ids[0])
            if len(rows) >= min_spans:
                return ids, rows
        time.sleep(0.5)
    raise AssertionError(f"no complete trace for {message_id} (ids {ids if 'ids' in dir() else []}, {len(rows)} spans)")


async def test_one_turn_is_one_trace_across_all_stages(client: ChatClient, settings) -> None:
    # a question never asked before, so the turn embeds it (the embedding span is asserted below): a
    # repeated one is served from the shared query-vector cache, and an id in it would not help, the
    # search leaves identifiers out of the query (processors.condense.searchable_text)
    team = "".join(random.choices(string.ascii_lowercase, k=10))
    request = new_request(f"How do I create an API key for the {team} team?", f"web:{uuid.uuid4().hex[:8]}")
    reply = await client.ask(request, 60)
    assert reply.text
    (await audit_when_done(client, [request], only_sent=False)).assert_clean()
    trace.get_tracer_provider().force_flush()
    ids, rows = await asyncio.to_thread(wait_for_trace, settings, request.message_id, 9)
    by_name = {r.name: r for r in rows}
    t = settings.topics
    hops = [f"{t.inbound} publish", f"{t.inbound} process", f"{t.enriched} process", f"{t.retrieved} process", f"{t.generated} process"]
    for hop in hops:
        assert hop in by_name, f"{hop} missing from {sorted(by_name)}"
    for parent, child in zip(hops, hops[1:]):
        assert by_name[child].parent_id == by_name[parent].span_id, f"{child} is not a child of {parent}"
    ids_by_span = {r.span_id: r for r in rows}

    def under(row, hop):
        while row.parent_id:
            row = ids_by_span[row.parent_id]
            if row.name == hop:
                return True
        return False

    redis_spans = [r for r in rows if r.name.startswith("redis ")]
    assert redis_spans and any(under(r, f"{t.inbound} process") for r in redis_spans)
    assert any(r.name.startswith("weaviate ") and under(r, f"{t.enriched} process") for r in rows)
    assert any(r.name.startswith("embed") for r in rows), sorted(by_name)
    llm = [r for r in rows if r.name.startswith("chat ")]
    assert llm and under(llm[0], f"{t.retrieved} process")
    raw = httpx.get(f"{settings.jaeger_query_url}/api/traces/{ids[0]}").json()["data"][0]
    llm_tags = next({tg["key"]: tg["value"] for tg in s["tags"]} for s in raw["spans"] if s["operationName"].startswith("chat "))
    assert llm_tags["gen_ai.request.model"]
    assert llm_tags["gen_ai.usage.input_tokens"] > 0 and llm_tags["gen_ai.usage.output_tokens"] > 0
    consumer = next({tg["key"]: tg["value"] for tg in s["tags"]} for s in raw["spans"] if s["operationName"] == f"{t.inbound} process")
    assert consumer["messaging.system"] == "kafka" and consumer["messaging.message.id"] == request.message_id
    assert consumer["span.kind"] == "consumer"
    everything = str(raw)
    assert request.text not in everything, "message text must not be in span attributes by default"
    assert f"'{request.user_id}'" not in everything, "raw user ids must not be in span attributes by default"


async def test_dead_lettered_turn_shows_the_error_in_its_trace(client: ChatClient, settings) -> None:
    marker = uuid.uuid4().hex
    with tracing.tracer("tests").start_as_current_span(f"garbage {marker}") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        await client.send_raw(b"not avro at all", key=f"web:{marker}", headers=tracing.inject())
    trace.get_tracer_provider().force_flush()
    deadline = time.monotonic() + 30
    rows = []
    while time.monotonic() < deadline:
        try:
            rows = fetch_trace(settings.jaeger_query_url, trace_id)
        except httpx.HTTPStatusError:
            rows = []
        if any(r.name == f"{settings.topics.inbound} process" for r in rows):
            break
        await asyncio.sleep(0.5)
    process = next(r for r in rows if r.name == f"{settings.topics.inbound} process")
    assert process.error and "not Avro" in process.error
    assert "dead-lettered" in process.events


async def test_no_record_carries_two_traceparent_headers(client: ChatClient, settings) -> None:
    request = new_request("What is on the status page?", f"web:{uuid.uuid4().hex[:8]}")
    await client.send(request, headers=[("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")])
    (await audit_when_done(client, [request], only_sent=False)).assert_clean()
    t = settings.topics
    headers_by_topic = {}
    for topic in (t.enriched, t.retrieved, t.generated, t.outbound):
        records = await asyncio.to_thread(lambda topic=topic: list(read_topic(settings, topic)))
        mine = [m.headers() or [] for m in records if request.message_id.encode() in (m.value() or b"")]
        assert len(mine) == 1, f"{topic}: {len(mine)} records of the turn"
        headers_by_topic[topic] = mine[0]
    for topic, headers in headers_by_topic.items():
        traceparents = [v for k, v in headers if k == "traceparent"]
        assert len(traceparents) == 1, f"{topic}: {headers}"
    # one trace all the way: every hop carries the same trace id
    trace_ids = {[v for k, v in h if k == "traceparent"][0].split(b"-")[1] for h in headers_by_topic.values()}
    assert len(trace_ids) == 1, trace_ids


async def test_metrics_count_every_turn(client: ChatClient, worker, settings) -> None:
    def totals() -> tuple[float, dict[str, float]]:
        """Replies produced, and records handled per stage, since the worker started."""
        samples = scrape(worker.metrics_url)
        replies = sum(v for name, values in samples.items() if name.startswith("chatstream_replies") and name.endswith("_total") for _, v in values)
        records: dict[str, float] = {}
        for name, values in samples.items():
            if name.startswith("chatstream_stage_records") and name.endswith("_total"):
                for labels, v in values:
                    records[labels["stage"]] = records.get(labels["stage"], 0) + v
        return replies, records

    await wait_idle(settings)  # earlier tests' turns are all counted before the "before" snapshot
    replies_before, records_before = await asyncio.to_thread(totals)
    n = 5
    requests = [new_request(f"How do I invite a teammate? ({i})", f"web:{uuid.uuid4().hex[:8]}") for i in range(n)]
    for r in requests:
        await client.send(r)
    (await audit_when_done(client, requests, only_sent=False)).assert_clean()
    replies_after, records_after = await asyncio.to_thread(totals)
    assert replies_after - replies_before == n
    handled = {stage: records_after.get(stage, 0) - records_before.get(stage, 0) for stage in STAGE_NAMES}
    assert handled == dict.fromkeys(handled, n), handled
    samples = await asyncio.to_thread(scrape, worker.metrics_url)
    assert any(name.startswith("chatstream_stage_duration") and name.endswith("_count") for name in samples)


async def test_trace_command_prints_the_waterfall(client: ChatClient, settings, capsys) -> None:
    from streams.cli import main

    request = new_request("How do I change my billing e-mail?", f"web:{uuid.uuid4().hex[:8]}")
    await client.ask(request, 60)
    (await audit_when_done(client, [request], only_sent=False)).assert_clean()
    trace.get_tracer_provider().force_flush()
    await asyncio.to_thread(wait_for_trace, settings, request.message_id, 9)
    rc = await asyncio.to_thread(main, ["trace", request.message_id, "--wait", "20"])
    out = capsys.readouterr().out
    assert rc == 0
    t = settings.topics
    for hop in (t.inbound, t.enriched, t.retrieved, t.generated):
        assert f"{hop} process" in out
    assert "chatstream-worker" in out
    from streams.console.jaeger import ui_available

    if ui_available(settings.jaeger_query_url):  # e.g. the compose file's Jaeger image
        assert "Jaeger UI: " in out
    else:  # the local stack's Go-module build serves a placeholder page: no address that leads there
        assert "Jaeger UI: " not in out and "no Jaeger UI at" in out
    lines = [line for line in out.splitlines() if " process" in line]
    assert all("ms" in line for line in lines)


async def test_stats_once_shows_stages_and_lag(client: ChatClient, worker, settings, capsys, monkeypatch) -> None:
    from streams.cli import main

    monkeypatch.setenv("CHATSTREAM_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("CHATSTREAM_CONSUMER_GROUP", settings.consumer_group)
    request = new_request("What does the Team plan include?", f"web:{uuid.uuid4().hex[:8]}")
    await client.ask(request, 60)
    (await audit_when_done(client, [request], only_sent=False)).assert_clean()
    rc = await asyncio.to_thread(main, ["stats", "--once", "--url", worker.metrics_url])
    out = capsys.readouterr().out
    assert rc == 0
    for word in (*STAGE_NAMES, "replies ANSWERED", "consumer lag", settings.topics.inbound):
        assert word in out, out
