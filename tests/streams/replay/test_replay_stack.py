"""Replay end to end on the local stack: isolation, same ids/order/send times, resume after Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from processors.records import ChatRequest, ChatResponse
from streams.client import new_request
from streams.producer import AsyncProducer
from streams.codec import make_codec
from streams.config import Settings
from streams.topic_reader import read_topic
from streams.topics import create_topics
from tests.streams.replay.conftest import chatstream, stack_credentials

pytestmark = pytest.mark.stack


class FakeChannelAPI:
    """A channel API (Slack-shaped) that counts every request it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                api.requests.append(self.path)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def source(knowledge_base):
    """A namespace standing in for production: turns on its chat.inbound (three sessions, slack and web)."""
    run = uuid.uuid4().hex[:8]
    settings = Settings(topic_prefix=f"i10src-{run}.")
    create_topics(settings)
    requests = []
    for s in range(3):
        session = f"slack:T1:C{s}:{run}" if s == 0 else f"web:{run}-{s}"
        channel = "slack" if s == 0 else "web"
        meta = {"slack_channel": f"C{s}", "thread_ts": "1.0"} if channel == "slack" else {}
        for i, text in enumerate(["How do I reset my password?", "and how long is the link valid?", "How do I export my data?"]):
            requests.append(new_request(text, session, user_id=f"user-{s}", channel=channel, sent_at=1_700_000_000_000 + 1000 * (3 * s + i), metadata=meta))

    async def publish():  # as a channel does; no reply tail needed (no worker runs on the source)
        producer = AsyncProducer(settings.kafka_bootstrap)
        codec = make_codec(settings)
        try:
            for request in requests:
                await producer.send(settings.topics.inbound, codec.encode(request), key=request.session_id)
        finally:
            await producer.close()

    asyncio.run(publish())
    return settings, requests


def _replies(settings: Settings, prefix: str) -> list[ChatResponse]:
    codec = make_codec(settings)
    return [codec.decode(m.value(), ChatResponse) for m in read_topic(settings.derive(topic_prefix=prefix), f"{prefix}chat.outbound")]


def test_replay_is_isolated_keeps_ids_order_and_send_times(source, tmp_path):
    src_settings, requests = source
    name = f"iso-{uuid.uuid4().hex[:6]}"
    prefix = f"replay-{name}."
    channel_api = FakeChannelAPI()
    try:
        env = {"CHATSTREAM_SLACK_API_URL": channel_api.url, "CHATSTREAM_SLACK_BOT_TOKEN": "xoxb-test"}
        dry = chatstream("replay", "--name", name, "--from", src_settings.topic_prefix, "--dry-run", home=tmp_path, env=env)
        assert "9 turns in 3 sessions" in dry.stdout and "nothing published" in dry.stdout
        assert not (tmp_path / "replays" / name / "published.log").exists()

        out = chatstream("replay", "--name", name, "--from", src_settings.topic_prefix, home=tmp_path, env=env)
        assert "9/9 turns answered" in out.stdout, out.stdout + out.stderr

        # same message ids, same order per session, original send times, in the replay namespace only
        codec = make_codec(src_settings)
        replayed = [codec.decode(m.value(), ChatRequest) for m in read_topic(src_settings, f"{prefix}chat.inbound")]
        assert sorted(r.message_id for r in replayed) == sorted(r.message_id for r in requests)
        original = {r.message_id: r for r in requests}
        for r in replayed:
            assert r.sent_at == original[r.message_id].sent_at and r.metadata["replay_source"] == src_settings.topic_prefix
        for session in {r.session_id for r in requests}:
            want = [r.message_id for r in requests if r.session_id == session]
            assert [r.message_id for r in replayed if r.session_id == session] == want
        replies = _replies(src_settings, prefix)
        assert sorted(r.message_id for r in replies) == sorted(original)  # exactly one reply each
        assert _replies(src_settings, src_settings.topic_prefix) == []  # the source namespace got nothing back

        # nothing reached production: no record of these ids on its topics (tail), no session state in Redis
        prod = Settings()
        ids = set(original)
        for topic in (prod.topics.inbound, prod.topics.outbound):
            try:
                seen = {codec.decode(m.value(), ChatRequest if topic.endswith("inbound") else ChatResponse).message_id
                        for m in read_topic(prod, topic, tail=2000)}
            except Exception:  # noqa: BLE001 - a production topic that does not exist holds nothing of ours
                seen = set()
            assert not ids & seen, topic
        r = redis.Redis.from_url(prod.redis_connection_url)
        session = requests[0].session_id
        assert not r.exists(f"cs:s:{{{session}}}:turns") and not r.exists(*(f"cs:replied:{i}" for i in ids))
        assert r.exists(f"cs:{prefix}s:{{{session}}}:turns") and r.exists(f"cs:{prefix}replied:{requests[0].message_id}")

        # no channel delivery: the replay runs no deliver, and deliver refuses the namespace
        refused = chatstream("deliver", home=tmp_path, env={**env, "CHATSTREAM_TOPIC_PREFIX": prefix}, check=False, timeout=60)
        assert refused.returncode != 0 and "refuses to run on the replay namespace" in refused.stderr
        assert channel_api.requests == []

        # the eval of the run reads its topics alone
        summary = json.loads(chatstream("eval", name, "--json", "--no-labels", home=tmp_path).stdout)
        assert summary["replied"] == 9 and summary["status_mix"].get("ANSWERED", 0) >= 6
        assert 0 < summary["latency_p50_ms"] < 60_000  # from when the replay offered the turn, not the 2023 sent_at
    finally:
        channel_api.close()


def test_replay_resumes_after_ctrl_c(source, tmp_path):
    src_settings, requests = source
    name = f"resume-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "CHATSTREAM_HOME": str(tmp_path), "CHATSTREAM_OTLP_ENDPOINT": "", **stack_credentials()}
    # a window of 1 turn: publishing waits for each reply, so an interrupt lands mid-replay
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "replay", "--name", name, "--from", src_settings.topic_prefix, "--window", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    log = tmp_path / "replays" / name / "published.log"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().split()) >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert "--resume" in output
    published_first = log.read_text().split()
    assert 3 <= len(published_first) < len(requests)

    out = chatstream("replay", "--name", name, "--resume", home=tmp_path)
    assert f"{len(requests)}/{len(requests)} turns answered" in out.stdout, out.stdout
    assert f"{len(requests) - len(published_first)} published by this run" in out.stdout
    published = log.read_text().split()
    assert sorted(published) == sorted(r.message_id for r in requests)  # each published exactly once
    replies = _replies(src_settings, f"replay-{name}.")
    assert sorted(r.message_id for r in replies) == sorted(r.message_id for r in requests)  # one reply each
