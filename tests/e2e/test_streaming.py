"""Streaming on the real stack: worker, scripted streaming LLM, gateway SSE, Kafka, Redis, Weaviate.

The scripted LLM streams word by word (first token after ``latency_ms``, then ``token_ms`` apart);
the test reads the session's server-sent events as a browser does.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from pydantic import SecretStr
import pytest_asyncio


from connectors.gateway.app import create_app
from streams.dev.llm_server import ScriptedLLMServer

from tests.connectors.connector_fakes import ServedApp

from .conftest import pipeline_settings
from .sse_client import SSEReader, shown_text
from .turns import new_request

pytestmark = pytest.mark.stack

API_KEY = "stream-key"
QUESTION = "How do I reset my password?"
CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def llm():
    with ScriptedLLMServer(latency_ms=300, token_ms=40) as server:
        yield server


@pytest.fixture(scope="module")
def settings(llm, knowledge_base):
    # the web caller's tenant is the one whose help center is ingested
    return pipeline_settings(llm, gateway_api_keys={API_KEY: knowledge_base}, rate_limit_burst=100,
                             rate_limit_per_minute=600)


@pytest.fixture(scope="module")
def gateway(settings, worker):
    app = create_app(settings)
    served = ServedApp(app, settings)  # as `chatstream gateway` serves it: read deadlines, connection cap
    deadline = time.monotonic() + 30
    while not app.state.tail.ready.is_set():
        assert time.monotonic() < deadline, "the SSE tail never got its partitions"
        time.sleep(0.05)
    yield served
    served.close()


@pytest_asyncio.fixture(loop_scope="function")
async def session(gateway):
    """Post a turn, open its session's event stream: (ask, reader, events_url)."""
    async with httpx.AsyncClient(base_url=gateway.url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
        readers: list[asyncio.Task] = []
        state: dict = {}

        async def ask(text: str) -> str:
            body = {"text": text, **({"session_id": state["session_id"]} if state else {})}
            r = await http.post("/v1/messages", json=body)
            assert r.status_code == 202, r.text
            data = r.json()
            if not state:
                state.update(session_id=data["session_id"], url=f"{gateway.url}{data['events_url']}?token={data['stream_token']}")
                reader = SSEReader(state["url"])
                readers.append(asyncio.create_task(reader.run()))
                state["reader"] = reader
                await asyncio.wait_for(reader.opened.wait(), 10)
            return data["message_id"]

        try:
            yield ask, state
        finally:
            for task in readers:
                task.cancel()


async def test_deltas_arrive_before_the_reply_and_add_up_to_it(llm, session):
    llm.script(answer=None, tokens=30)
    ask, state = session
    mid = await ask(QUESTION)
    reader: SSEReader = state["reader"]
    reply = await reader.wait_reply(mid)
    deltas = reader.of(mid, "delta")
    assert len(deltas) >= 2, (reply.data, [e.id for e in reader.events])
    assert all(d.at < reply.at for d in deltas)
    assert [d.data["seq"] for d in deltas] == list(range(len(deltas)))  # in order, no repeats
    assert deltas[-1].data["final"] is True
    assert reply.data["status"] == "ANSWERED", reply.data
    assert "".join(d.data["text"] for d in deltas).strip() == reply.data["text"]
    # the first text came long before the whole answer: 30 tokens 40 ms apart take 1.2 s
    assert reply.at - deltas[0].at > 0.8


async def test_a_card_number_split_across_deltas_never_reaches_the_client(llm, session):
    llm.script(answer=f"Your card {CARD} is on file, see the billing page [billing].", tokens=0)
    ask, state = session
    # a question the help center covers: an uncovered one is answered "not found" without the LLM
    mid = await ask("How do I update the card on file for billing?")
    reader: SSEReader = state["reader"]
    reply = await reader.wait_reply(mid)
    raw = [e.data["text"] for e in reader.of(mid)]
    assert not any(part in text for text in raw for part in ("4111", "1111"))
    assert "[card redacted]" in "".join(e.data["text"] for e in reader.of(mid, "delta"))
    assert "4111" not in reply.data["text"]


async def test_a_blocked_reply_retracts_the_provisional_text(llm, session, settings):
    leak = settings.system_prompt
    llm.script(answer=leak, tokens=0)
    ask, state = session
    mid = await ask(QUESTION)
    reader: SSEReader = state["reader"]
    reply = await reader.wait_reply(mid)
    assert reply.data["status"] == "BLOCKED"
    provisional = "".join(e.data["text"] for e in reader.of(mid, "delta"))
    assert "Northwind" in provisional  # it was shown while written...
    assert shown_text(reader.of(mid)) == reply.data["text"] and "Northwind" not in reply.data["text"]  # ...and replaced
    # a page that reconnects after the reply gets the reply only, never the retracted text
    again = SSEReader(state["url"], last_event_id=f"{mid}:0")
    task = asyncio.create_task(again.run())
    try:
        await again.wait_reply(mid, 10)
        await asyncio.sleep(0.3)
        assert [e.kind for e in again.of(mid)] == ["reply"]
    finally:
        task.cancel()


async def test_reconnect_with_last_event_id_resumes_without_repeats(llm, session):
    llm.script(answer=None, tokens=40)
    ask, state = session
    mid = await ask(QUESTION)
    reader: SSEReader = state["reader"]
    deadline = time.monotonic() + 20
    while len(reader.of(mid, "delta")) < 5:
        assert time.monotonic() < deadline, "no deltas"
        await asyncio.sleep(0.02)
    seen = reader.of(mid, "delta")[:5]
    resumed = SSEReader(state["url"], last_event_id=seen[-1].id)
    task = asyncio.create_task(resumed.run())
    try:
        reply = await resumed.wait_reply(mid)
        rest = resumed.of(mid, "delta")
        seqs = [e.data["seq"] for e in rest]
        assert seqs and seqs[0] == 5 and seqs == sorted(set(seqs))
        text = "".join(e.data["text"] for e in seen + rest)
        assert text.strip() == reply.data["text"]
    finally:
        task.cancel()


async def test_slack_sees_a_placeholder_edits_and_the_final_text(llm, settings):
    """The real worker streams, the real deliver service edits a placeholder on a Slack stand-in."""
    from connectors.delivery import deliver
    from streams.client import ChatClient

    from tests.connectors.connector_fakes import Recorder

    llm.script(answer=None, tokens=60)  # 300 ms to the first token, then 60 tokens 40 ms apart: ~2.7 s
    slack = Recorder([(200, {}, lambda r: {"ok": True, "channel": "C1", "ts": "1700000000.000200"})])
    s = settings.derive(slack_api_url=slack.url, slack_bot_token=SecretStr("xoxb-test"),
                        deliver_group=f"{settings.consumer_group}-deliver")
    stop = asyncio.Event()
    service = asyncio.create_task(deliver.run(s, stop))
    try:
        async with ChatClient(s) as client:
            request = new_request(QUESTION, f"slack:T1:C1:{time.time_ns()}", channel="slack",
                                  metadata={"slack_channel": "C1", "slack_thread_ts": "1700000000.000100"})
            reply = await client.ask(request, 60)
        assert reply.status.value == "ANSWERED", reply
        deadline = time.monotonic() + 30
        while not any(r["body"].get("text", "").startswith(reply.text) for r in slack.requests[1:]):
            assert time.monotonic() < deadline, [r["path"] for r in slack.requests]
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(service, 30)
        slack.close()
    paths = [r["path"] for r in slack.requests]
    assert paths[0] == "/chat.postMessage" and paths.count("/chat.postMessage") == 1, paths
    assert paths.count("/chat.update") >= 2, paths  # at least one edit while written, then the final text
    assert slack.requests[0]["body"]["thread_ts"] == "1700000000.000100"
    edits = [r for r in slack.requests[1:]]
    assert all(e["body"]["ts"] == "1700000000.000200" for e in edits)
    gaps = [b - a for a, b in zip(slack.times[1:-1], slack.times[2:-1])]
    assert all(g >= 0.9 for g in gaps), gaps  # at most about one edit a second while written
    assert reply.text in slack.requests[-1]["body"]["text"]
