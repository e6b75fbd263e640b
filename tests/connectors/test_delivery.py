"""deliver without Kafka: channel payloads against local stand-ins, retries, markers, dead letters."""

from __future__ import annotations

import httpx
import pytest
from connector_fakes import FakeMessage, FakeProducer, FakeRedis, no_sleep, settings

from connectors.delivery.deliver import Deliverer, build_clients, delivered_key
from connectors.delivery.http import Permanent, Transient, retry_after
from processors.records import ChatRequest, ChatResponse, Citation, DeadLetter, Status
from streams.codec import SingleObjectCodec

codec = SingleObjectCodec()


def reply(channel: str, metadata: dict[str, str], text="Open Settings > Security.", message_id="m-1") -> ChatResponse:
    req = ChatRequest(message_id, f"{channel}:s", "u", channel, "q", 0, metadata)
    return ChatResponse.for_request(req, text, Status.ANSWERED,
                                    citations=[Citation("kb-1", "Passwords", "https://help.example/pw", 0.9)])


def message(resp: ChatResponse, offset=0) -> FakeMessage:
    return FakeMessage("chat.outbound", codec.encode(resp), resp.session_id.encode(), 0, offset)


async def run_one(s, resp_or_msgs, redis=None, producer=None):
    redis = redis or FakeRedis()
    producer = producer or FakeProducer()
    async with httpx.AsyncClient(timeout=5) as http:
        d = Deliverer(s, build_clients(s, http), redis, producer, codec, sleep=no_sleep)
        msgs = resp_or_msgs if isinstance(resp_or_msgs, list) else [message(resp_or_msgs)]
        commits = await d.handle_batch(msgs)
    return d, redis, producer, commits


async def test_whatsapp_reply_goes_to_the_phone_number_messages_endpoint(recorder_factory):
    api = recorder_factory([(200, {}, {"messaging_product": "whatsapp", "messages": [{"id": "wamid.out"}]})])
    s = settings(whatsapp_api_url=api.url + "/v20.0", whatsapp_access_token="wa-token")
    resp = reply("whatsapp", {"whatsapp_phone_number_id": "106540352242922", "whatsapp_from": "16505551234",
                              "whatsapp_message_id": "wamid.in"})
    d, redis, _, commits = await run_one(s, resp)
    assert d.counts == {"delivered": 1}
    sent = api.requests[0]
    assert sent["path"] == "/v20.0/106540352242922/messages"
    assert sent["headers"]["Authorization"] == "Bearer wa-token"
    assert sent["body"]["to"] == "16505551234" and sent["body"]["type"] == "text"
    assert sent["body"]["text"]["body"].startswith("Open Settings > Security.")
    assert "Passwords (https://help.example/pw)" in sent["body"]["text"]["body"]
    assert sent["body"]["context"] == {"message_id": "wamid.in"}
    assert await redis.exists(delivered_key("m-1"))
    assert commits == {("chat.outbound", 0): 1}


async def test_teams_reply_uses_a_token_and_the_activity_reply_url(recorder_factory):
    bf = recorder_factory([(200, {}, lambda req: {"access_token": "bf-token", "expires_in": 3600}
                            if req["path"] == "/token" else {"id": "reply-1"})])
    s = settings(teams_app_id="app-id", teams_app_password="app-password", teams_token_url=bf.url + "/token",
                 teams_service_url_allow=[bf.url + "/"])
    resp = reply("teams", {"teams_service_url": bf.url + "/", "teams_conversation_id": "a:1xyz-conv",
                           "teams_activity_id": "1700000000123", "teams_bot_id": "28:app-id"})
    d, _, _, _ = await run_one(s, resp)
    assert d.counts == {"delivered": 1}
    token_req, activity_req = bf.requests
    assert token_req["path"] == "/token"
    assert activity_req["path"] == "/v3/conversations/a%3A1xyz-conv/activities/1700000000123"
    assert activity_req["headers"]["Authorization"] == "Bearer bf-token"
    assert activity_req["body"]["replyToId"] == "1700000000123"
    assert activity_req["body"]["text"].startswith("Open Settings > Security.")


async def test_teams_service_url_outside_the_allow_list_is_dead_lettered_without_sending(recorder_factory):
    bf = recorder_factory()
    s = settings(teams_app_id="app-id", teams_app_password="pw", teams_token_url=bf.url + "/token")
    resp = reply("teams", {"teams_service_url": "https://attacker.example/", "teams_conversation_id": "c",
                           "teams_activity_id": "a"})
    d, _, producer, commits = await run_one(s, resp)
    assert d.counts == {"dead_lettered": 1}
    assert bf.requests == []
    letter = codec.decode(producer.sent[0]["value"], DeadLetter)
    assert "not in teams_service_url_allow" in letter.error_message
    assert commits == {("chat.outbound", 0): 1}


async def test_transient_failures_retry_then_dead_letter_after_max_attempts(recorder_factory):
    slack = recorder_factory([(503, {}, {"ok": False})])
    s = settings(slack_api_url=slack.url, slack_bot_token="xoxb", deliver_max_attempts=3)
    d, redis, producer, _ = await run_one(s, reply("slack", {"slack_channel": "C1", "slack_thread_ts": "1.0"}))
    assert len(slack.requests) == 3
    assert d.counts == {"retried": 2, "dead_lettered": 1}
    assert not await redis.exists(delivered_key("m-1"))
    assert producer.sent[0]["topic"] == "chat.deadletter"


async def test_read_twice_is_delivered_once(recorder_factory):
    slack = recorder_factory([(200, {}, {"ok": True, "channel": "C1", "ts": "2.0"})])
    s = settings(slack_api_url=slack.url, slack_bot_token="xoxb")
    resp = reply("slack", {"slack_channel": "C1", "slack_thread_ts": "1.0"})
    d, redis, _, commits = await run_one(s, [message(resp, 0), message(resp, 1)])
    assert d.counts == {"delivered": 1, "duplicate": 1}
    assert len(slack.requests) == 1
    assert commits == {("chat.outbound", 0): 2}


async def test_web_and_unconfigured_channels(recorder_factory):
    s = settings()  # no channel credentials at all
    d, _, producer, _ = await run_one(s, [message(reply("web", {})), message(reply("cli", {}), 1),
                                          message(reply("slack", {"slack_channel": "C1"}, message_id="m-2"), 2)])
    assert d.counts == {"skipped_web": 1, "skipped_no_channel_api": 1, "dead_lettered": 1}
    assert "not configured" in codec.decode(producer.sent[0]["value"], DeadLetter).error_message


async def test_undecodable_record_is_dead_lettered():
    s = settings()
    d, _, producer, commits = await run_one(s, [FakeMessage("chat.outbound", b"garbage", b"k", 3, 7)])
    assert d.counts == {"dead_lettered": 1}
    letter = codec.decode(producer.sent[0]["value"], DeadLetter)
    assert (letter.partition, letter.offset, letter.value, letter.stage) == (3, 7, b"garbage", "deliver")
    assert commits == {("chat.outbound", 3): 8}


def test_retry_after_parsing():
    assert retry_after(httpx.Response(429, headers={"Retry-After": "3"})) == 3.0
    assert retry_after(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after(httpx.Response(429)) is None


@pytest.mark.parametrize("status,cls", [(429, Transient), (500, Transient), (400, Permanent), (403, Permanent)])
async def test_status_classification(recorder_factory, status, cls):
    api = recorder_factory([(status, {}, {"error": "x"})])
    from connectors.delivery.http import post

    async with httpx.AsyncClient() as http:
        with pytest.raises(cls):
            await post(http, api.url, "test")
