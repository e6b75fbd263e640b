"""A reply Slack accepted just before deliver died is not posted again after the restart.

The Slack stand-in stores the post and then drops the connection (what deliver sees when it dies
right after the 2xx, before its marker); the restarted deliver (a new Deliverer, same Redis) reads
the record again. Before the delivering marker and the metadata lookup it posted a second time.
"""

from __future__ import annotations

import httpx
from connector_fakes import FakeMessage, FakeProducer, FakeRedis, SlackFake, no_sleep, settings

from connectors.delivery.deliver import Deliverer, build_clients, delivered_key, delivering_key
from processors.records import ChatRequest, ChatResponse, Status
from streams.codec import SingleObjectCodec

codec = SingleObjectCodec()


def slack_reply(message_id: str, thread_ts: str | None = "1700000000.000100") -> ChatResponse:
    metadata = {"slack_channel": "C1"} | ({"slack_thread_ts": thread_ts} if thread_ts else {})
    req = ChatRequest(message_id, "slack:C1", "U1", "slack", "q", 0, metadata)
    return ChatResponse.for_request(req, "Open Settings > Security.", Status.ANSWERED)


async def deliver_once(s, redis: FakeRedis, resp: ChatResponse, crash: bool) -> dict[str, int]:
    """One deliver process handling the record; ``crash``: it dies after the channel accepted the post."""
    async with httpx.AsyncClient(timeout=5) as http:
        d = Deliverer(s, build_clients(s, http), redis, FakeProducer(), codec, sleep=no_sleep)
        msg = FakeMessage("chat.outbound", codec.encode(resp), resp.session_id.encode(), 0, 0)
        if crash:
            # the first answer is lost: deliver would retry; a process killed right there does nothing more
            class Died(BaseException):
                pass

            async def die(_delay: float) -> None:
                raise Died

            d.sleep = die
            try:
                await d.handle_batch([msg])
            except (Died, BaseExceptionGroup):
                pass
        else:
            await d.handle_batch([msg])
    return d.counts


async def test_slack_reply_accepted_before_a_crash_is_found_not_resent(slack_fake: SlackFake) -> None:
    s = settings(slack_api_url=slack_fake.url, slack_bot_token="xoxb", deliver_max_attempts=3)
    redis = FakeRedis()
    for n, (mid, thread) in enumerate((("m-thread", "1700000000.000100"), ("m-channel", None)), start=1):
        resp = slack_reply(mid, thread)
        slack_fake.accept_then_fail = 1
        await deliver_once(s, redis, resp, crash=True)
        assert slack_fake.posts == n and not await redis.exists(delivered_key(mid))
        counts = await deliver_once(s, redis, resp, crash=False)  # the restarted deliver
        assert slack_fake.posts == n, f"{mid}: posted again after the crash"
        assert counts == {"found_already_sent": 1}
        assert await redis.exists(delivered_key(mid)) and not await redis.exists(delivering_key(mid))
    assert slack_fake.lookups == ["conversations.replies", "conversations.history"]


async def test_a_post_that_never_reached_slack_is_sent_after_the_crash(slack_fake: SlackFake) -> None:
    s = settings(slack_api_url=slack_fake.url, slack_bot_token="xoxb")
    redis = FakeRedis()
    resp = slack_reply("m-lost")
    redis.data[delivering_key("m-lost")] = b"1700000000000"  # died after the marker, before the post
    counts = await deliver_once(s, redis, resp, crash=False)
    assert counts == {"delivered": 1} and slack_fake.posts == 1 and slack_fake.replies_to("m-lost") == 1


async def test_a_normal_delivery_makes_no_lookup(slack_fake: SlackFake) -> None:
    s = settings(slack_api_url=slack_fake.url, slack_bot_token="xoxb")
    redis = FakeRedis()
    counts = await deliver_once(s, redis, slack_reply("m-ok"), crash=False)
    assert counts == {"delivered": 1} and slack_fake.lookups == [] and slack_fake.posts == 1
    posted = slack_fake.messages[0]["metadata"]
    assert posted == {"event_type": "chatstream_reply", "event_payload": {"message_id": "m-ok"}}
