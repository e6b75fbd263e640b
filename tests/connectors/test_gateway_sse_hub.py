"""The gateway's SSE hub without a server: what a page is sent when a turn is generated again.

A worker that dies mid-answer leaves the first attempt's pieces on chat.deltas; the turn is then
generated again (another attempt, from seq 0), and its answer may differ. The page must end up showing
one attempt's text, never the first attempt's start with the second one's end.
"""

from __future__ import annotations

import asyncio
import json

from connectors.gateway.sse import Hub
from processors.records import ChatDelta, ChatRequest, ChatResponse, Status
from tests.e2e.sse_client import Event, shown_over_time

SESSION = "web:acme:s1"


def piece(seq: int, attempt: str, text: str, final: bool = False) -> ChatDelta:
    return ChatDelta(message_id="m1", session_id=SESSION, channel="web", seq=seq, text=text, final=final, attempt=attempt)


def reply(text: str) -> ChatResponse:
    request = ChatRequest("m1", SESSION, "u", "web", "How do I reset my password?", 0, {}, tenant="acme")
    return ChatResponse.for_request(request, text, Status.ANSWERED)


def parse(raw: bytes) -> tuple[str, str, dict]:
    fields = dict(line.split(": ", 1) for line in raw.decode().strip().split("\n"))
    return fields["event"], fields["id"], json.loads(fields["data"])


async def test_a_second_attempt_replaces_the_first_and_its_late_pieces_are_dropped() -> None:
    hub = Hub()
    stream = hub.subscribe(SESSION, keepalive_s=5)
    assert await stream.__anext__() == b"retry: 2000\n\n"
    for delta in [piece(0, "a", "To reset "), piece(1, "a", "your password, ")]:
        hub.publish_delta(delta)
    # the worker died; the turn is generated again, and this time the answer differs
    for delta in [piece(0, "b", "Open "), piece(2, "a", "late piece of the dead worker "), piece(1, "b", "Settings "),
                  piece(1, "b", "Settings "), piece(2, "b", "then Security.", final=True)]:
        hub.publish_delta(delta)
    sent = [parse(await asyncio.wait_for(stream.__anext__(), 1)) for _ in range(5)]
    assert [(kind, data["attempt"], data["seq"]) for kind, _, data in sent] == [
        ("delta", "a", 0), ("delta", "a", 1), ("delta", "b", 0), ("delta", "b", 1), ("delta", "b", 2)]
    assert len({eid for _, eid, _ in sent}) == 5  # ids stay unique across attempts (Last-Event-ID)
    assert shown_over_time([Event(kind, eid, data, 0.0) for kind, eid, data in sent])[-1] == "Open Settings then Security."

    # a page reconnecting with an id of the superseded attempt gets the new attempt from its start
    resumed = hub.backlog(SESSION, sent[1][1])
    assert [(e["attempt"], e["seq"]) for e in resumed] == [("b", 0), ("b", 1), ("b", 2)]
    assert [(e["attempt"], e["seq"]) for e in hub.backlog(SESSION, None)] == [("b", 0), ("b", 1), ("b", 2)]
    assert [e["seq"] for e in hub.backlog(SESSION, sent[3][1])] == [2]

    hub.publish(reply("Open Settings, then Security."))
    hub.publish_delta(piece(3, "a", "even later"))
    kind, _, data = parse(await asyncio.wait_for(stream.__anext__(), 1))
    assert kind == "reply" and data["text"] == "Open Settings, then Security."
    assert [e.get("seq") for e in hub.backlog(SESSION, None)] == [None]  # only the reply is kept
    await stream.aclose()
