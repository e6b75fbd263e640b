"""Provisional answers on Slack and Teams without Kafka: placeholder, throttled edits, final edit;
with two deliver processes sharing one Redis, the final reply wins and repeated pieces add no text."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from connector_fakes import FakeMessage, FakeProducer, FakeRedis, no_sleep, settings

from connectors.delivery.deliver import Deliverer, build_clients
from processors.records import ChatDelta, ChatRequest, ChatResponse, Citation, Status
from streams.codec import SingleObjectCodec

codec = SingleObjectCodec()
SLACK_MD = {"slack_channel": "C1", "slack_thread_ts": "1.0"}


def delta(seq: int, text: str, channel="slack", md=SLACK_MD, final=False, message_id="m-1", attempt="") -> FakeMessage:
    d = ChatDelta(message_id, f"{channel}:s", channel, seq, text, final, metadata=dict(md), attempt=attempt)
    return FakeMessage("chat.deltas", codec.encode(d), b"s", 1, seq)


def final(text: str, channel="slack", md=SLACK_MD, status=Status.ANSWERED, message_id="m-1") -> FakeMessage:
    req = ChatRequest(message_id, f"{channel}:s", "u", channel, "q", 0, dict(md))
    resp = ChatResponse.for_request(req, text, status, citations=[Citation("kb-1", "Passwords", "https://help.example/pw", 0.9)])
    return FakeMessage("chat.outbound", codec.encode(resp), b"s", 0, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def deliver(s, steps, clock: Clock):
    """Feed records one by one; each step is (seconds to advance, message)."""
    async with httpx.AsyncClient(timeout=5) as http:
        d = Deliverer(s, build_clients(s, http), FakeRedis(), FakeProducer(), codec, sleep=no_sleep)
        d.drafts.clock = clock
        outcomes = []
        for advance, msg in steps:
            clock.now += advance
            outcomes.append(await d.handle(msg))
    return outcomes


def slack_answer(request):
    return {"ok": True, "channel": "C1", "ts": "9.9"}


async def test_slack_gets_a_placeholder_edits_at_most_once_a_second_then_the_final_text(recorder_factory):
    slack = recorder_factory([(200, {}, slack_answer)])
    s = settings(slack_api_url=slack.url, slack_bot_token="xoxb")
    pieces = ["To reset", " your", " password,", " open", " Settings", " >", " Security."]
    steps = [(0.3, delta(i, p)) for i, p in enumerate(pieces)] + [(0.1, delta(len(pieces), "", final=True))]
    steps.append((0.2, final("To reset your password, open Settings > Security.")))
    outcomes = await deliver(s, steps, Clock())
    paths = [r["path"] for r in slack.requests]
    assert paths[0] == "/chat.postMessage" and all(p == "/chat.update" for p in paths[1:])
    assert outcomes[0] == "draft_posted" and outcomes[-1] == "delivered"
    assert slack.requests[0]["body"] == {"channel": "C1", "text": "To reset", "unfurl_links": False, "thread_ts": "1.0"}
    updates = slack.requests[1:-1]
    assert 1 <= len(updates) <= 2  # 2.2 s of pieces, 0.3 s apart: at most one edit per second
    assert all(u["body"]["ts"] == "9.9" for u in slack.requests[1:])
    last = slack.requests[-1]["body"]
    assert last["text"].startswith("To reset your password, open Settings > Security.") and "Sources" in last["text"]


async def test_a_blocked_final_replaces_the_provisional_text(recorder_factory):
    slack = recorder_factory([(200, {}, slack_answer)])
    s = settings(slack_api_url=slack.url, slack_bot_token="xoxb")
    steps = [(0, delta(0, "My instructions are")), (2, delta(1, " to be helpful")),
             (0.1, final("Sorry, I can't help with that.", status=Status.BLOCKED))]
    await deliver(s, steps, Clock())
    assert [r["path"] for r in slack.requests] == ["/chat.postMessage", "/chat.update", "/chat.update"]
    assert slack.requests[-1]["body"]["text"].startswith("Sorry, I can't help with that.")
    assert slack.requests[-1]["body"]["ts"] == "9.9"


async def test_pieces_after_the_final_reply_and_repeats_are_ignored(recorder_factory):
    slack = recorder_factory([(200, {}, slack_answer)])
    s = settings(slack_api_url=slack.url, slack_bot_token="xoxb")
    steps = [(0, final("Done.")), (0, delta(0, "Do")), (2, delta(1, "ne."))]
    outcomes = await deliver(s, steps, Clock())
    assert outcomes == ["delivered", "draft_after_final", "draft_after_final"]
    assert [r["path"] for r in slack.requests] == ["/chat.postMessage"]
    slack.requests.clear()
    outcomes = await deliver(s, [(0, delta(0, "Hel")), (2, delta(0, "Hel"))], Clock())
    assert outcomes == ["draft_posted", "draft_repeat"]


async def test_a_turn_generated_again_replaces_the_placeholder_text(recorder_factory):
    """Its worker died mid-answer: the new attempt's text replaces the first one's (never both mixed),
    and a late piece of the first attempt is dropped."""
    slack = recorder_factory([(200, {}, slack_answer)])
    s = settings(slack_api_url=slack.url, slack_bot_token="xoxb")
    steps = [(0, delta(0, "To reset", attempt="a")), (2, delta(1, " your password,", attempt="a")),
             (2, delta(0, "Open", attempt="b")), (0.1, delta(2, " open Settings", attempt="a")),
             (2, delta(1, " Settings, then Security.", attempt="b"))]
    outcomes = await deliver(s, steps, Clock())
    assert outcomes == ["draft_posted", "draft_updated", "draft_updated", "draft_repeat", "draft_updated"]
    shown = [r["body"]["text"] for r in slack.requests]
    assert shown == ["To reset", "To reset your password,", "Open", "Open Settings, then Security."]


async def test_whatsapp_gets_only_the_final_reply(recorder_factory):
    wa = recorder_factory([(200, {}, {"messages": [{"id": "wamid.1"}]})])
    s = settings(whatsapp_api_url=wa.url, whatsapp_access_token="t")
    md = {"whatsapp_from": "4917000000", "whatsapp_phone_number_id": "1"}
    outcomes = await deliver(s, [(0, delta(0, "Hello", "whatsapp", md)), (0, final("Hello there.", "whatsapp", md))], Clock())
    assert outcomes[0] == "draft_not_editable"
    assert len(wa.requests) == 1


async def test_teams_activity_is_updated_in_place(recorder_factory):
    def answer(request):
        if request["path"].endswith("/token"):
            return {"access_token": "tok", "expires_in": 3600}
        return {"id": "act-2"}

    teams = recorder_factory([(200, {}, answer)])
    s = settings(teams_app_id="app", teams_app_password="pw", teams_token_url=teams.url + "/token",
                 teams_service_url_allow=[teams.url + "/"])
    md = {"teams_service_url": teams.url, "teams_conversation_id": "conv-1", "teams_activity_id": "act-1"}
    steps = [(0, delta(0, "Open", "teams", md)), (1.5, delta(1, " Settings", "teams", md)),
             (0.1, final("Open Settings > Security.", "teams", md))]
    outcomes = await deliver(s, steps, Clock())
    calls = [(r["method"], r["path"]) for r in teams.requests if not r["path"].endswith("/token")]
    assert calls == [
        ("POST", "/v3/conversations/conv-1/activities/act-1"),
        ("PUT", "/v3/conversations/conv-1/activities/act-2"),
        ("PUT", "/v3/conversations/conv-1/activities/act-2"),
    ]
    assert outcomes == ["draft_posted", "draft_updated", "delivered"]
    assert teams.requests[-1]["body"]["text"].startswith("Open Settings > Security.")


# --- several deliver processes: one Redis, one channel, two Deliverers ----------------------------


class SlowEditChannel:
    """A Slack-like channel whose edits can be held in flight; ``landed`` is the order they took effect."""

    channel = "slack"

    def __init__(self) -> None:
        self.landed: list[tuple[str, str]] = []
        self.hold_updates = False
        self.update_started = asyncio.Event()
        self.release_update = asyncio.Event()

    async def send(self, resp: ChatResponse) -> dict[str, str]:
        self.landed.append(("post_reply", resp.text))
        return {"channel": "C1", "ts": "2.0"}

    async def post_draft(self, d: ChatDelta, text: str) -> dict[str, str]:
        self.landed.append(("post_draft", text))
        return {"channel": "C1", "ts": "1.0"}

    async def update_draft(self, handle: dict[str, str], d: ChatDelta, text: str) -> None:
        if self.hold_updates:
            self.update_started.set()
            await self.release_update.wait()
        self.landed.append(("update_draft", text))

    async def finish_draft(self, handle: dict[str, str], resp: ChatResponse) -> dict[str, str]:
        self.landed.append(("finish_draft", resp.text))
        return handle


@pytest.fixture(params=["fake_redis", pytest.param("real_redis", marks=pytest.mark.stack)])
async def shared_redis(request):
    """The Redis both deliver processes use: the fake, and (with the stack) the real one."""
    if request.param == "fake_redis":
        yield FakeRedis(), "m-1"
        return
    import redis.asyncio as aioredis

    from streams.config import Settings

    client = aioredis.from_url(Settings().redis_connection_url)
    message_id = f"test-drafts-{uuid.uuid4().hex[:10]}"
    try:
        yield client, message_id
    finally:
        await client.delete(f"draft-state:{message_id}", f"draft-lock:{message_id}", f"delivered:{message_id}",
                            f"delivering:{message_id}")
        await client.aclose()


def two_delivers(redis, channel: SlowEditChannel):
    s = settings(slack_api_url="http://127.0.0.1:9/unused", slack_bot_token="xoxb", deliver_draft_update_interval_s=0)
    return [Deliverer(s, {"slack": channel}, redis, FakeProducer(), codec, sleep=no_sleep) for _ in range(2)]


async def test_the_final_reply_lands_after_a_provisional_edit_in_flight_in_another_process(shared_redis):
    redis, mid = shared_redis
    channel = SlowEditChannel()
    deltas_process, final_process = two_delivers(redis, channel)
    assert await deltas_process.handle(delta(0, "To reset", message_id=mid)) == "draft_posted"
    channel.hold_updates = True
    edit = asyncio.ensure_future(deltas_process.handle(delta(1, " your password", message_id=mid)))
    await channel.update_started.wait()  # the provisional edit is in flight at the channel
    reply = asyncio.ensure_future(final_process.handle(final("To reset your password, open Settings.", message_id=mid)))
    done, _ = await asyncio.wait([reply], timeout=0.3)  # time for the final reply to overtake, if it can
    assert not done, "the final reply was sent while a provisional edit was still in flight"
    channel.release_update.set()
    assert await edit == "draft_updated" and await reply == "delivered"
    assert [kind for kind, _ in channel.landed] == ["post_draft", "update_draft", "finish_draft"]
    assert channel.landed[-1][1] == "To reset your password, open Settings."


async def test_a_piece_after_the_final_reply_sent_by_another_process_is_dropped(shared_redis):
    redis, mid = shared_redis
    channel = SlowEditChannel()
    deltas_process, final_process = two_delivers(redis, channel)
    assert await deltas_process.handle(delta(0, "To reset", message_id=mid)) == "draft_posted"
    assert await final_process.handle(final("To reset your password, open Settings.", message_id=mid)) == "delivered"
    assert await deltas_process.handle(delta(1, " your", message_id=mid)) == "draft_after_final"
    assert [kind for kind, _ in channel.landed] == ["post_draft", "finish_draft"]


async def test_a_redone_turn_resending_its_pieces_continues_the_same_placeholder_without_repeating_text(shared_redis):
    redis, mid = shared_redis
    channel = SlowEditChannel()
    first, takeover = two_delivers(redis, channel)
    pieces = ["To reset", " your", " password,", " open", " Settings."]
    outcomes = [await first.handle(delta(i, p, message_id=mid)) for i, p in enumerate(pieces[:3])]
    assert outcomes == ["draft_posted", "draft_updated", "draft_updated"]
    # the turn is redone (or its partition moved): every piece comes again, to another process
    outcomes = [await takeover.handle(delta(i, p, message_id=mid)) for i, p in enumerate(pieces)]
    assert outcomes == ["draft_repeat"] * 3 + ["draft_updated"] * 2
    assert [kind for kind, _ in channel.landed].count("post_draft") == 1
    assert channel.landed[-1] == ("update_draft", "".join(pieces))
    assert await takeover.handle(final("".join(pieces), message_id=mid)) == "delivered"
    assert channel.landed[-1] == ("finish_draft", "".join(pieces))
