"""Slack Events API: signature v0, replay window, url_verification, bots, retries, 503."""

from __future__ import annotations

import json
import time

import pytest
from connector_fakes import FailingProducer, FakeProducer, settings
from starlette.testclient import TestClient

from connectors.gateway.app import create_app
from connectors.gateway.slack import sign
from processors.records import ChatRequest
from streams.codec import SingleObjectCodec

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def make_client(producer=None, **overrides):
    s = settings(slack_signing_secret=SECRET, slack_bot_user_id="UBOT", **overrides)
    app = create_app(s, producer if producer is not None else FakeProducer(), sse_tail=False)
    return TestClient(app), app


def event(text="How do I reset my password?", *, event_id="Ev01", user="U123", channel="D042", ts="1700000000.000100",
          channel_type="im", kind="message", **extra):
    ev = {"type": kind, "user": user, "text": text, "channel": channel, "ts": ts, "channel_type": channel_type}
    ev.update(extra)
    return {"token": "x", "team_id": "T001", "api_app_id": "A1", "type": "event_callback", "event_id": event_id,
            "event_time": int(time.time()), "event": ev}


def signed(payload, *, ts=None, secret=SECRET, retry=None):
    body = json.dumps(payload).encode()
    ts = str(int(time.time()) if ts is None else ts)
    headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sign(secret, ts, body),
               "Content-Type": "application/json"}
    if retry is not None:
        headers["X-Slack-Retry-Num"] = str(retry)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    return body, headers


def test_signed_message_becomes_one_chat_request():
    producer = FakeProducer()
    client, app = make_client(producer)
    with client:
        body, headers = signed(event())
        r = client.post("/slack/events", content=body, headers=headers)
    assert r.status_code == 200
    assert len(producer.sent) == 1
    sent = producer.sent[0]
    assert sent["topic"] == "chat.inbound"
    assert sent["key"] == "slack:T001:D042:1700000000.000100"
    req = SingleObjectCodec().decode(sent["value"], ChatRequest)
    assert req.channel == "slack" and req.text == "How do I reset my password?"
    assert req.session_id == "slack:T001:D042:1700000000.000100"
    assert req.metadata["slack_channel"] == "D042" and req.metadata["slack_thread_ts"] == "1700000000.000100"
    assert [k for k, _ in sent["headers"]].count("traceparent") == 1


def test_message_id_is_stable_for_the_same_slack_message():
    p1, p2 = FakeProducer(), FakeProducer()
    for p, eid in ((p1, "EvA"), (p2, "EvB")):  # e.g. a message event and its app_mention twin
        client, _ = make_client(p)
        with client:
            body, headers = signed(event(event_id=eid))
            assert client.post("/slack/events", content=body, headers=headers).status_code == 200
    codec = SingleObjectCodec()
    assert codec.decode(p1.sent[0]["value"], ChatRequest).message_id == codec.decode(p2.sent[0]["value"], ChatRequest).message_id


def test_thread_reply_joins_the_thread_session_and_mentions_are_stripped():
    producer = FakeProducer()
    client, _ = make_client(producer)
    with client:
        payload = event("<@UBOT> and for SSO?", kind="app_mention", channel="C9", ts="1700000001.000200",
                        thread_ts="1700000000.000100", channel_type=None)
        body, headers = signed(payload)
        assert client.post("/slack/events", content=body, headers=headers).status_code == 200
    req = SingleObjectCodec().decode(producer.sent[0]["value"], ChatRequest)
    assert req.session_id == "slack:T001:C9:1700000000.000100"
    assert req.text == "and for SSO?"


def test_url_verification_answers_the_challenge():
    producer = FakeProducer()
    client, _ = make_client(producer)
    with client:
        body, headers = signed({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                                "type": "url_verification"})
        r = client.post("/slack/events", content=body, headers=headers)
    assert r.status_code == 200
    assert r.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    assert producer.sent == []


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda b, h: (b, {**h, "X-Slack-Signature": "v0=" + "0" * 64}), "bad_signature"),
        (lambda b, h: (b.replace(b"password", b"passw0rd"), h), "bad_signature"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "X-Slack-Signature"}), "missing_signature"),
    ],
)
def test_forged_requests_are_refused_and_counted(mutate, reason):
    producer = FakeProducer()
    client, app = make_client(producer)
    with client:
        body, headers = mutate(*signed(event()))
        r = client.post("/slack/events", content=body, headers=headers)
        stats = client.get("/v1/stats").json()["counters"]
    assert r.status_code == 401
    assert producer.sent == []
    assert stats[f"refused.slack.{reason}"] == 1


def test_wrong_secret_is_refused():
    producer = FakeProducer()
    client, _ = make_client(producer)
    with client:
        body, headers = signed(event(), secret="not-the-secret")
        assert client.post("/slack/events", content=body, headers=headers).status_code == 401
    assert producer.sent == []


def test_expired_timestamp_is_refused_even_with_a_valid_signature(caplog):
    producer = FakeProducer()
    client, _ = make_client(producer)
    with client:
        body, headers = signed(event(), ts=int(time.time()) - 301)
        r = client.post("/slack/events", content=body, headers=headers)
        stats = client.get("/v1/stats").json()["counters"]
    assert r.status_code == 401
    assert stats["refused.slack.expired"] == 1
    assert producer.sent == []
    assert SECRET not in caplog.text


def test_replayed_request_is_refused():
    producer = FakeProducer()
    client, _ = make_client(producer)
    with client:
        body, headers = signed(event())
        assert client.post("/slack/events", content=body, headers=headers).status_code == 200
        r = client.post("/slack/events", content=body, headers=headers)
        stats = client.get("/v1/stats").json()["counters"]
    assert r.status_code == 401
    assert stats["refused.slack.replayed"] == 1
    assert len(producer.sent) == 1


def test_slack_retry_is_acknowledged_but_not_processed_twice():
    producer = FakeProducer()
    client, _ = make_client(producer)
    with client:
        body, headers = signed(event(event_id="EvRetry"))
        assert client.post("/slack/events", content=body, headers=headers).status_code == 200
        for n in (1, 2):
            body, headers = signed(event(event_id="EvRetry"), ts=int(time.time()) - n, retry=n)
            assert client.post("/slack/events", content=body, headers=headers).status_code == 200
        stats = client.get("/v1/stats").json()["counters"]
    assert len(producer.sent) == 1
    assert stats["slack.retry_deduplicated"] == 2


def test_retry_after_a_503_is_processed():
    failing = FailingProducer()
    client, app = make_client(failing)
    with client:
        body, headers = signed(event(event_id="EvDown"))
        assert client.post("/slack/events", content=body, headers=headers).status_code == 503
        ok = FakeProducer()
        app.state.gateway.publisher.producer = ok  # Kafka is back
        body, headers = signed(event(event_id="EvDown"), retry=1)
        assert client.post("/slack/events", content=body, headers=headers).status_code == 200
    assert len(ok.sent) == 1


@pytest.mark.parametrize(
    "payload",
    [
        event(bot_id="B01", user="UBOT"),
        event(user="UBOT"),
        event(subtype="message_changed"),
        event(subtype="bot_message"),
        event(channel_type="channel"),  # plain channel chatter: only mentions are for the bot
        event(text="   "),
    ],
)
def test_bot_own_and_non_user_messages_are_ignored(payload):
    producer = FakeProducer()
    client, _ = make_client(producer)
    with client:
        body, headers = signed(payload)
        assert client.post("/slack/events", content=body, headers=headers).status_code == 200
    assert producer.sent == []


def test_kafka_down_answers_503_with_retry_after():
    client, _ = make_client(FailingProducer())
    with client:
        body, headers = signed(event())
        r = client.post("/slack/events", content=body, headers=headers)
        stats = client.get("/v1/stats").json()["counters"]
    assert r.status_code == 503
    assert r.headers["retry-after"]
    assert stats["unavailable.slack"] == 1


def test_slack_disabled_without_signing_secret():
    producer = FakeProducer()
    app = create_app(settings(), producer, sse_tail=False)
    with TestClient(app) as client:
        body, headers = signed(event())
        assert client.post("/slack/events", content=body, headers=headers).status_code == 404
        assert client.get("/v1/stats").json()["channels"]["slack"].startswith("disabled")
    assert producer.sent == []


def test_oversized_body_is_refused_with_413():
    producer = FakeProducer()
    client, _ = make_client(producer, gateway_max_body_bytes=1024)
    with client:
        body, headers = signed(event("x" * 5000))
        r = client.post("/slack/events", content=body, headers=headers)
        stats = client.get("/v1/stats").json()["counters"]
    assert r.status_code == 413
    assert stats["refused.slack.too_large"] == 1
    assert producer.sent == []
