"""Token buckets, expiring sets, and Slack reactions turned into ChatFeedback."""

from __future__ import annotations

import json
import time

from connector_fakes import FakeProducer, FakeRedis, settings
from starlette.testclient import TestClient
from test_gateway_slack import SECRET, signed

from connectors.feedback import reaction_kind, slack_reply_key
from connectors.gateway.app import create_app
from connectors.gateway.limits import ExpiringSet, TokenBuckets
from processors.records import ChatFeedback, FeedbackKind
from streams.codec import SingleObjectCodec


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_allows_burst_then_refills():
    clock = Clock()
    buckets = TokenBuckets(60.0, burst=2, clock=clock)  # one per second
    assert buckets.take("ip") == 0 and buckets.take("ip") == 0
    wait = buckets.take("ip")
    assert 0.9 < wait <= 1.0
    assert buckets.take("other") == 0  # keys are independent
    clock.t += 1.0
    assert buckets.take("ip") == 0


def test_token_bucket_memory_is_bounded():
    buckets = TokenBuckets(60.0, max_keys=10)
    for i in range(100):
        buckets.take(f"ip{i}")
    assert len(buckets._buckets) == 10


def test_expiring_set():
    clock = Clock()
    seen = ExpiringSet(10, clock=clock)
    seen.add("a")
    assert "a" in seen
    clock.t += 11
    assert "a" not in seen


def test_reaction_names():
    assert reaction_kind("+1") is FeedbackKind.THUMBS_UP
    assert reaction_kind("+1::skin-tone-3") is FeedbackKind.THUMBS_UP
    assert reaction_kind("-1") is FeedbackKind.THUMBS_DOWN
    assert reaction_kind("tada") is None


def reaction(reaction="+1", ts="1700000100.000200", item_user="UBOT", event_id="EvR1"):
    return {"team_id": "T001", "type": "event_callback", "event_id": event_id, "event_time": int(time.time()),
            "event": {"type": "reaction_added", "user": "U123", "reaction": reaction, "item_user": item_user,
                      "item": {"type": "message", "channel": "D042", "ts": ts}, "event_ts": "1700000200.0"}}


def test_slack_reaction_on_a_bot_reply_becomes_feedback():
    redis = FakeRedis()
    redis.data[slack_reply_key("D042", "1700000100.000200")] = json.dumps(
        {"message_id": "m-42", "session_id": "slack:T001:D042:1.0", "user_id": "slack:T001:U123"}).encode()
    producer = FakeProducer()
    s = settings(slack_signing_secret=SECRET, slack_bot_user_id="UBOT")
    with TestClient(create_app(s, producer, sse_tail=False, redis=redis)) as client:
        for payload in (reaction("-1"), reaction(event_id="EvR2", ts="9.9"), reaction("tada", event_id="EvR3"),
                        reaction(item_user="USOMEONE", event_id="EvR4")):
            body, headers = signed(payload)
            assert client.post("/slack/events", content=body, headers=headers).status_code == 200
    assert len(producer.sent) == 1
    assert producer.sent[0]["topic"] == "chat.feedback" and producer.sent[0]["key"] == "slack:T001:D042:1.0"
    fb = SingleObjectCodec().decode(producer.sent[0]["value"], ChatFeedback)
    assert (fb.message_id, fb.kind, fb.score, fb.channel) == ("m-42", FeedbackKind.THUMBS_DOWN, -1, "slack")
