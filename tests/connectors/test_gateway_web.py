"""Web channel: API keys and JWTs, body/text limits, rates, 503, SSE replies, feedback."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jwt
import pytest
from connector_fakes import FailingProducer, FakeProducer, HangingProducer, settings
from starlette.testclient import TestClient

from connectors.gateway.app import create_app
from connectors.gateway.sse import Hub
from processors.records import ChatFeedback, ChatRequest, ChatResponse, Citation, FeedbackKind, Status
from streams.codec import SingleObjectCodec

KEYS = {"key-acme": "acme", "key-globex": "globex"}
codec = SingleObjectCodec()


def client_for(producer=None, hub=None, **overrides):
    s = settings(gateway_api_keys=KEYS, gateway_jwt_secret="jwt-secret-for-tests-0123456789abcdef", **overrides)
    app = create_app(s, producer if producer is not None else FakeProducer(), hub=hub, sse_tail=False)
    return TestClient(app), app


def test_post_message_returns_202_and_publishes_after_the_ack():
    producer = FakeProducer()
    client, _ = client_for(producer)
    with client:
        r = client.post("/v1/messages", json={"text": "Where is my invoice?", "session_id": "s1"},
                        headers={"X-API-Key": "key-acme"})
    assert r.status_code == 202
    data = r.json()
    assert data["session_id"] == "web:acme:s1"
    req = codec.decode(producer.sent[0]["value"], ChatRequest)
    assert (req.message_id, req.session_id, req.tenant, req.channel) == (data["message_id"], "web:acme:s1", "acme", "web")
    assert producer.sent[0]["key"] == "web:acme:s1"
    assert [k for k, _ in producer.sent[0]["headers"]].count("traceparent") == 1


def test_client_message_id_makes_a_retried_post_the_same_turn():
    producer = FakeProducer()
    client, _ = client_for(producer)
    with client:
        ids = [client.post("/v1/messages", json={"text": "hi", "session_id": "s1", "message_id": "m-1"},
                           headers={"Authorization": "Bearer key-acme"}).json()["message_id"] for _ in range(2)]
    assert ids[0] == ids[1]


def test_a_tenant_cannot_write_into_another_tenants_session():
    producer = FakeProducer()
    client, _ = client_for(producer)
    with client:
        r = client.post("/v1/messages", json={"text": "hi", "session_id": "web:acme:s1"}, headers={"X-API-Key": "key-globex"})
    assert r.json()["session_id"] == "web:globex:web:acme:s1"


def test_jwt_bearer_sets_tenant_and_user_and_expired_is_refused():
    producer = FakeProducer()
    client, _ = client_for(producer)
    good = jwt.encode({"sub": "u-7", "tenant": "acme", "exp": int(time.time()) + 60}, "jwt-secret-for-tests-0123456789abcdef", "HS256")
    expired = jwt.encode({"sub": "u-7", "tenant": "acme", "exp": int(time.time()) - 60}, "jwt-secret-for-tests-0123456789abcdef", "HS256")
    forged = jwt.encode({"sub": "u-7", "tenant": "acme", "exp": int(time.time()) + 60}, "other-secret-0123456789abcdef-0123456789", "HS256")
    with client:
        assert client.post("/v1/messages", json={"text": "hi"}, headers={"Authorization": f"Bearer {good}"}).status_code == 202
        assert client.post("/v1/messages", json={"text": "hi"}, headers={"Authorization": f"Bearer {expired}"}).status_code == 401
        assert client.post("/v1/messages", json={"text": "hi"}, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        assert client.post("/v1/messages", json={"text": "hi"}).status_code == 401
        assert client.post("/v1/messages", json={"text": "hi"}, headers={"X-API-Key": "nope"}).status_code == 401
        counters = client.get("/v1/stats").json()["counters"]
    req = codec.decode(producer.sent[0]["value"], ChatRequest)
    assert (req.user_id, req.tenant) == ("u-7", "acme")
    assert len(producer.sent) == 1
    assert counters["refused.web.expired_token"] == 1
    assert counters["refused.web.missing_credentials"] == 1
    assert counters["refused.web.unknown_api_key"] == 1


@pytest.mark.parametrize("body,status", [
    ({"text": ""}, 400), ({"text": 5}, 400), ({}, 400), ({"text": "hi", "session_id": "bad/id"}, 400),
    ({"text": "hi", "metadata": {"a": 1}}, 400), ({"text": "x" * 4001}, 413),
])
def test_bad_bodies_are_refused(body, status):
    producer = FakeProducer()
    client, _ = client_for(producer)
    with client:
        assert client.post("/v1/messages", json=body, headers={"X-API-Key": "key-acme"}).status_code == status
        assert client.post("/v1/messages", content=b"{not json", headers={"X-API-Key": "key-acme"}).status_code == 400
    assert producer.sent == []


def test_body_over_the_limit_is_413_before_anything_else():
    client, _ = client_for(gateway_max_body_bytes=100)
    with client:
        r = client.post("/v1/messages", json={"text": "y" * 500}, headers={"X-API-Key": "key-acme"})
    assert r.status_code == 413


def test_per_ip_and_per_tenant_rate_limits_answer_429_with_retry_after():
    client, _ = client_for(gateway_ip_rate_per_minute=6.0)  # burst 1
    with client:
        assert client.post("/v1/messages", json={"text": "a"}, headers={"X-API-Key": "key-acme"}).status_code == 202
        r = client.post("/v1/messages", json={"text": "b"}, headers={"X-API-Key": "key-acme"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    client, _ = client_for(gateway_tenant_rate_per_minute=6.0)
    with client:
        assert client.post("/v1/messages", json={"text": "a"}, headers={"X-API-Key": "key-acme"}).status_code == 202
        assert client.post("/v1/messages", json={"text": "b"}, headers={"X-API-Key": "key-acme"}).status_code == 429
        assert client.post("/v1/messages", json={"text": "c"}, headers={"X-API-Key": "key-globex"}).status_code == 202
        assert client.get("/v1/stats").json()["counters"]["refused.web.tenant_rate_limited"] == 1


def test_kafka_refusing_gives_503_never_202():
    client, _ = client_for(FailingProducer())
    with client:
        r = client.post("/v1/messages", json={"text": "hi"}, headers={"X-API-Key": "key-acme"})
    assert r.status_code == 503


def test_kafka_hanging_gives_503_within_the_timeout():
    client, app = client_for(HangingProducer(), gateway_publish_timeout_s=0.2)
    app.state.gateway.publisher.timeout_s = 0.3
    with client:
        started = time.monotonic()
        r = client.post("/v1/messages", json={"text": "hi"}, headers={"X-API-Key": "key-acme"})
    assert r.status_code == 503
    assert time.monotonic() - started < 3


def test_web_disabled_without_keys():
    app = create_app(settings(), FakeProducer(), sse_tail=False)
    with TestClient(app) as client:
        assert client.post("/v1/messages", json={"text": "hi"}, headers={"X-API-Key": "x"}).status_code == 404


def test_chat_page_is_served():
    client, _ = client_for()
    with client:
        r = client.get("/")
    assert r.status_code == 200 and 'id="text"' in r.text and "/v1/messages" in r.text


def test_sse_stream_delivers_the_reply_of_its_session_only(serve):
    hub = Hub()
    producer = FakeProducer()
    s = settings(gateway_api_keys=KEYS, gateway_sse_keepalive_s=0.2)
    app = create_app(s, producer, hub=hub, sse_tail=False)
    served = serve(app)
    with httpx.Client(base_url=served.url, timeout=10) as client:
        r = client.post("/v1/messages", json={"text": "hi", "session_id": "s9"}, headers={"X-API-Key": "key-acme"})
        data = r.json()
        assert client.get(f"/v1/sessions/{data['session_id']}/events?token=wrong").status_code == 401
        other = client.get("/v1/sessions/web:globex:x/events", headers={"X-API-Key": "key-acme"})
        assert other.status_code == 403
        req = codec.decode(producer.sent[0]["value"], ChatRequest)
        url = f"/v1/sessions/{data['session_id']}/events?token={data['stream_token']}"
        events = []
        with client.stream("GET", url) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            # the server's event loop runs in uvicorn's thread: hand the replies to it
            loop = served.server_loop()
            other_req = ChatRequest("m-other", "web:acme:other", "u", "web", "q", 0)
            loop.call_soon_threadsafe(hub.publish, ChatResponse.for_request(other_req, "not yours", Status.ANSWERED))
            loop.call_soon_threadsafe(hub.publish, ChatResponse.for_request(
                req, "Invoices are under Billing.", Status.ANSWERED,
                citations=[Citation("billing", "Billing", "kb/billing.md", 0.9)]))
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    break
    assert events[0]["message_id"] == data["message_id"]
    assert events[0]["text"] == "Invoices are under Billing."
    assert events[0]["citations"][0]["title"] == "Billing"


async def test_sse_late_subscriber_gets_the_buffered_reply():
    hub = Hub()
    req = ChatRequest("m1", "web:acme:s1", "u", "web", "q", 0)
    hub.publish(ChatResponse.for_request(req, "early answer", Status.ANSWERED))
    stream = hub.subscribe("web:acme:s1", keepalive_s=0.1)
    chunks = [await stream.__anext__(), await stream.__anext__()]
    await stream.aclose()
    assert b"early answer" in chunks[1]
    assert hub.backlog("web:acme:s1", "m1") == []


def test_web_feedback_with_stream_token_or_api_key():
    producer = FakeProducer()
    client, _ = client_for(producer)
    with client:
        data = client.post("/v1/messages", json={"text": "hi", "session_id": "s1"}, headers={"X-API-Key": "key-acme"}).json()
        fb = {"message_id": data["message_id"], "session_id": data["session_id"], "kind": "down", "comment": "wrong"}
        assert client.post("/v1/feedback", json=fb, headers={"X-Stream-Token": data["stream_token"]}).status_code == 202
        assert client.post("/v1/feedback", json={**fb, "kind": "csat", "score": 4}, headers={"X-API-Key": "key-acme"}).status_code == 202
        assert client.post("/v1/feedback", json=fb, headers={"X-Stream-Token": "forged"}).status_code == 401
        assert client.post("/v1/feedback", json=fb, headers={"X-API-Key": "key-globex"}).status_code == 403
        assert client.post("/v1/feedback", json={**fb, "kind": "csat", "score": 9}, headers={"X-API-Key": "key-acme"}).status_code == 400
    feedback = [m for m in producer.sent if m["topic"] == "chat.feedback"]
    assert len(feedback) == 2
    first = codec.decode(feedback[0]["value"], ChatFeedback)
    assert (first.message_id, first.kind, first.score, first.comment) == (data["message_id"], FeedbackKind.THUMBS_DOWN, -1, "wrong")
    assert feedback[0]["key"] == data["session_id"]
    assert codec.decode(feedback[1]["value"], ChatFeedback).score == 4
