"""WhatsApp Cloud API webhook: verify handshake, X-Hub-Signature-256, text turns vs status callbacks."""

from __future__ import annotations

import json
import time

from connector_fakes import FailingProducer, FakeProducer, settings
from starlette.testclient import TestClient

from connectors.gateway.app import create_app
from connectors.gateway.whatsapp import sign
from processors.records import ChatRequest
from streams.codec import SingleObjectCodec

APP_SECRET = "wa-app-secret-0123456789"
VERIFY = "wa-verify-token"


def client_for(producer):
    s = settings(whatsapp_app_secret=APP_SECRET, whatsapp_verify_token=VERIFY)
    return TestClient(create_app(s, producer, sse_tail=False))


def text_message(body="What are your opening hours?", wamid="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
                 sender="16505551234", ts=None):
    return {
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                    "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": sender}],
                    "messages": [{"from": sender, "id": wamid, "timestamp": str(ts or int(time.time())),
                                  "text": {"body": body}, "type": "text"}],
                },
            }],
        }],
    }


def status_callback():
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "statuses": [{"id": "wamid.out1", "status": "delivered", "timestamp": str(int(time.time())),
                          "recipient_id": "16505551234"}],
        }}]}],
    }


def post(client, payload, secret=APP_SECRET, signature=None):
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if signature is not False:
        headers["X-Hub-Signature-256"] = signature or sign(secret, body)
    return client.post("/whatsapp/webhook", content=body, headers=headers)


def test_verify_handshake():
    with client_for(FakeProducer()) as client:
        ok = client.get("/whatsapp/webhook", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY,
                                                     "hub.challenge": "1158201444"})
        bad = client.get("/whatsapp/webhook", params={"hub.mode": "subscribe", "hub.verify_token": "guess",
                                                      "hub.challenge": "1158201444"})
    assert ok.status_code == 200 and ok.text == "1158201444"
    assert bad.status_code == 403


def test_signed_text_message_becomes_a_turn():
    producer = FakeProducer()
    with client_for(producer) as client:
        assert post(client, text_message()).status_code == 200
    assert len(producer.sent) == 1
    req = SingleObjectCodec().decode(producer.sent[0]["value"], ChatRequest)
    assert req.session_id == "whatsapp:106540352242922:16505551234" == producer.sent[0]["key"]
    assert req.text == "What are your opening hours?" and req.channel == "whatsapp"
    assert req.metadata["whatsapp_phone_number_id"] == "106540352242922"
    assert req.metadata["whatsapp_from"] == "16505551234"


def test_redelivered_message_keeps_its_message_id():
    producer = FakeProducer()
    with client_for(producer) as client:
        post(client, text_message())
        post(client, text_message())
    codec = SingleObjectCodec()
    ids = {codec.decode(m["value"], ChatRequest).message_id for m in producer.sent}
    assert len(ids) == 1


def test_forged_and_unsigned_posts_are_refused():
    producer = FakeProducer()
    with client_for(producer) as client:
        assert post(client, text_message(), secret="wrong").status_code == 401
        assert post(client, text_message(), signature="sha256=" + "0" * 64).status_code == 401
        assert post(client, text_message(), signature=False).status_code == 401
        counters = client.get("/v1/stats").json()["counters"]
    assert producer.sent == []
    assert counters["refused.whatsapp.bad_signature"] == 2
    assert counters["refused.whatsapp.missing_signature"] == 1


def test_status_callbacks_are_acknowledged_not_turned_into_turns():
    producer = FakeProducer()
    with client_for(producer) as client:
        assert post(client, status_callback()).status_code == 200
        counters = client.get("/v1/stats").json()["counters"]
    assert producer.sent == []
    assert counters["whatsapp.statuses"] == 1


def test_non_text_and_stale_messages_are_ignored():
    producer = FakeProducer()
    image = text_message()
    msg = image["entry"][0]["changes"][0]["value"]["messages"][0]
    msg["type"] = "image"
    msg.pop("text")
    msg["image"] = {"id": "img1", "mime_type": "image/jpeg"}
    with client_for(producer) as client:
        assert post(client, image).status_code == 200
        assert post(client, text_message(ts=int(time.time()) - 8 * 24 * 3600)).status_code == 200
    assert producer.sent == []


def test_kafka_down_is_503_so_meta_retries():
    with client_for(FailingProducer()) as client:
        assert post(client, text_message()).status_code == 503


def test_disabled_without_secrets():
    with TestClient(create_app(settings(), FakeProducer(), sse_tail=False)) as client:
        assert post(client, text_message()).status_code == 404
        assert client.get("/whatsapp/webhook", params={"hub.mode": "subscribe", "hub.verify_token": ""}).status_code == 404
