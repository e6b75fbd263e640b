"""Publish a replay's turns into its namespace and wait for their replies, with a progress bar.

The turns go through ``ChatClient`` exactly as a channel publishes them (same message ids, keyed by
session, original ``sent_at``; ``metadata.replay_published_at`` records when the replay offered the
turn so evaluation can measure latency from there). At most ``window`` turns wait for a reply at a
time: the bar and its ETA then track what the pipeline really finished, memory stays flat, and an
interruption leaves at most a window of turns published but unanswered (the worker answers them on
resume). A turn is done when its reply is on the namespace's ``chat.outbound``, or when it was
dead-lettered (e.g. a channel the replay's worker does not know).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

from processors.records import ChatRequest, DeadLetter, now_ms
from streams.client import ChatClient, TopicTail
from streams.codec import DecodeError
from streams.config import Settings
from streams.replay.journal import PublishedLog
from streams.topic_reader import TopicMissing, read_topic

REPLAY_PUBLISHED_AT = "replay_published_at"
REPLAY_SOURCE = "replay_source"


@dataclass
class ReplayOutcome:
    total: int
    published_now: int
    done: int
    elapsed_s: float

    @property
    def complete(self) -> bool:
        return self.done >= self.total


def _finished_ids(settings: Settings, client: ChatClient) -> set[str]:
    """message_ids already answered (or dead-lettered) in the namespace: a resumed run counts them done."""
    done: set[str] = set()
    from processors.records import ChatResponse

    for topic, cls in ((settings.topics.outbound, ChatResponse), (settings.topics.deadletter, DeadLetter)):
        try:
            for msg in read_topic(settings, topic, timeout_s=15.0):
                try:
                    record = client.codec.decode(msg.value(), cls)
                except DecodeError:
                    continue
                if record.message_id:
                    done.add(record.message_id)
        except TopicMissing:
            continue
    return done


async def run_replay(
    settings: Settings,
    requests: list[ChatRequest],
    log: PublishedLog,
    *,
    source: str,
    window: int = 128,
    timeout_s: float = 600.0,
    progress=None,  # rich.progress.Progress or None
) -> ReplayOutcome:
    started = time.monotonic()
    wanted = {r.message_id for r in requests}
    async with ChatClient(settings) as client:
        dead: set[str] = set()
        loop = asyncio.get_running_loop()

        def on_dead(letter: DeadLetter, msg) -> None:  # type: ignore[no-untyped-def]
            if letter.message_id:
                loop.call_soon_threadsafe(dead.add, letter.message_id)

        dead_tail = TopicTail(settings, settings.topics.deadletter, lambda b: client.codec.decode(b, DeadLetter), on_dead)
        await asyncio.to_thread(dead_tail.start)
        try:
            finished_before = await asyncio.to_thread(_finished_ids, settings, client)

            def done_ids() -> set[str]:
                return (finished_before | set(client.replies) | dead) & wanted

            task = progress.add_task("replay", total=len(requests)) if progress is not None else None

            def refresh() -> int:
                n = len(done_ids())
                if progress is not None:
                    progress.update(task, completed=n)
                return n

            published_now = 0
            for request in requests:
                if request.message_id in log:
                    continue
                while True:
                    outstanding = sum(1 for r in log.ids if r in wanted) - refresh()
                    if outstanding < window:
                        break
                    await asyncio.sleep(0.1)
                metadata = {**request.metadata, REPLAY_PUBLISHED_AT: str(now_ms()), REPLAY_SOURCE: source}
                await client.send(dataclasses.replace(request, metadata=metadata))
                log.add(request.message_id)
                published_now += 1
            deadline = time.monotonic() + timeout_s
            while refresh() < len(requests) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            return ReplayOutcome(len(requests), published_now, refresh(), time.monotonic() - started)
        finally:
            await asyncio.to_thread(dead_tail.stop)

