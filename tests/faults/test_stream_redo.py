"""A worker dies while an answer streams to a browser: the turn is generated again, with other words,
and the page shows the first attempt, then the second one from its start, never the two mixed; the
reply comes once and matches the second attempt."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from connectors.gateway.app import create_app
from tests.connectors.connector_fakes import ServedApp
from tests.e2e.sse_client import SSEReader, shown_over_time
from tests.faults.conftest import pipeline_settings

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

API_KEY = "redo-key"
FIRST = " ".join(["To reset your password, open Settings and choose Security."] * 6)
SECOND = "Open Settings, then Security, then Reset password, and follow the e-mail we send you."


async def test_kill_9_mid_stream_then_the_redone_answer_replaces_the_first(fault_stack, llm, workers) -> None:
    llm.script(answer=FIRST, latency_ms=200, token_ms=100, tokens=0)
    settings = pipeline_settings(fault_stack, llm, gateway_api_keys={API_KEY: fault_stack.settings.tenant})
    worker = workers.start(settings)
    app = create_app(settings)
    served = ServedApp(app, settings)
    try:
        assert await app.state.tail.wait_ready(30), "the SSE tail never got its partitions"
        async with httpx.AsyncClient(base_url=served.url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
            r = await http.post("/v1/messages", json={"text": "How do I reset my password?"})
            assert r.status_code == 202, r.text
            data = r.json()
        mid = data["message_id"]
        reader = SSEReader(f"{served.url}{data['events_url']}?token={data['stream_token']}")
        task = asyncio.create_task(reader.run())
        try:
            deadline = time.monotonic() + 60
            while len(reader.of(mid, "delta")) < 3:
                assert time.monotonic() < deadline, f"no deltas; worker log:\n{worker.tail()}"
                await asyncio.sleep(0.02)
            worker.kill()  # mid-answer: 60 words 100 ms apart take 6 s
            llm.script(answer=SECOND, token_ms=20)
            workers.start(settings, wait=False)
            reply = await reader.wait_reply(mid, timeout_s=120)
            await asyncio.sleep(0.5)  # anything after the reply would show here
        finally:
            task.cancel()
    finally:
        served.close()

    deltas = reader.of(mid, "delta")
    attempts = list(dict.fromkeys(e.data["attempt"] for e in deltas))
    assert len(attempts) == 2, [(e.data["attempt"], e.data["seq"]) for e in deltas]
    assert [e.data["seq"] for e in deltas if e.data["attempt"] == attempts[1]][0] == 0
    shown = shown_over_time(deltas)
    assert all(FIRST.startswith(t) or SECOND.startswith(t) for t in shown), shown
    assert FIRST.startswith(shown[0]) and shown[-1] == SECOND
    assert len(reader.of(mid, "reply")) == 1 and reply.data["text"].startswith(SECOND)
    assert len({e.id for e in reader.of(mid)}) == len(reader.of(mid))  # no event twice
