"""A real gateway in a thread and a reader of its server-sent events, for the streaming tests."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx

from processors.records import ChatDelta


@dataclass
class Event:
    kind: str
    id: str
    data: dict
    at: float  # time.monotonic() when the client read it


@dataclass
class SSEReader:
    """Reads one session's event stream into ``events`` until closed."""

    url: str
    last_event_id: str | None = None
    events: list[Event] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
        async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None)) as client:
            async with client.stream("GET", self.url, headers=headers) as response:
                assert response.status_code == 200, response.status_code
                self.opened.set()
                kind, eid, data = "message", "", []
                async for line in response.aiter_lines():
                    if line == "":
                        if data:
                            self.events.append(Event(kind, eid, json.loads("\n".join(data)), time.monotonic()))
                        kind, eid, data = "message", "", []
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("id:"):
                        eid = line[3:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())

    def of(self, message_id: str, kind: str | None = None) -> list[Event]:
        return [e for e in self.events if e.data.get("message_id") == message_id and kind in (None, e.kind)]

    async def wait_reply(self, message_id: str, timeout_s: float = 30.0) -> Event:
        deadline = time.monotonic() + timeout_s
        while not self.of(message_id, "reply"):
            assert time.monotonic() < deadline, f"no reply for {message_id}; events: {[e.id for e in self.events]}"
            await asyncio.sleep(0.02)
        return self.of(message_id, "reply")[0]


def shown_over_time(events: list[Event]) -> list[str]:
    """What a page shows for one message after each of its events, by the rule index.html applies
    (``ChatDelta.step``): pieces append, another attempt from seq 0 starts over, the reply replaces all."""
    shown, text, attempt, seq = [], "", None, -1
    for e in events:
        d = e.data
        if e.kind == "reply":
            shown.append(d["text"])
            break
        step = ChatDelta(d["message_id"], d["session_id"], "web", d["seq"], d["text"], attempt=d.get("attempt", "")).step(attempt, seq)
        if step == "drop":
            continue
        text = d["text"] if step == "restart" else text + d["text"]
        attempt, seq = d.get("attempt", ""), d["seq"]
        shown.append(text)
    return shown


def shown_text(events: list[Event]) -> str:
    """What a page shows for one message in the end: its provisional text, or the reply that replaced it."""
    shown = shown_over_time(events)
    return shown[-1] if shown else ""
