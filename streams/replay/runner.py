"""Publish a replay's turns into its namespace and wait for their replies, with a progress bar.

The turns go through ``ChatClient`` exactly as a channel publishes them (same message ids, keyed by
session, original ``sent_at``; ``metadata.replay_published_at`` records when the replay offered the
turn so evaluation can measure latency from there).

A session's next turn is offered only once the previous one has its reply, as the user sent it after
reading that reply: otherwise the enrich stage would load the session before the earlier answer was
recorded, and a follow-up would be answered without its history. Sessions run concurrently; at most
``window`` turns wait for a reply at a time, so the bar and its ETA track what the pipeline really
finished, memory stays flat, and an interruption leaves at most a window of turns published but
unanswered (the worker answers them, and ``--resume`` waits for those replies). A turn is done when its reply is on the namespace's ``chat.outbound``, or when it was
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

            def is_done(message_id: str) -> bool:
                return message_id in finished_before or message_id in client.replies or message_id in dead

            task = progress.add_task("replay", total=len(requests)) if progress is not None else None
            state = {"done": -1, "progress_at": time.monotonic()}

            def refresh() -> int:
                n = sum(1 for mid in wanted if is_done(mid))
                if n != state["done"]:
                    state["done"], state["progress_at"] = n, time.monotonic()
                    if progress is not None:
                        progress.update(task, completed=n)
                return n

            async def keep_refreshing() -> None:
                while True:
                    refresh()
                    await asyncio.sleep(0.2)

            def stalled() -> bool:
                """No turn finished for ``timeout_s``: the pipeline is stuck, stop waiting."""
                return time.monotonic() - state["progress_at"] > timeout_s

            sessions: dict[str, list[ChatRequest]] = {}
            for request in requests:  # dicts keep insertion order: sessions start in replay order
                sessions.setdefault(request.session_id, []).append(request)
            window_slots = asyncio.Semaphore(window)
            published_now = 0

            async def wait_done(message_id: str) -> bool:
                while not is_done(message_id):
                    if stalled():
                        return False
                    await asyncio.sleep(0.05)
                return True

            async def replay_session(turns: list[ChatRequest]) -> None:
                nonlocal published_now
                for request in turns:
                    if request.message_id not in log:
                        async with window_slots:
                            metadata = {**request.metadata, REPLAY_PUBLISHED_AT: str(now_ms()), REPLAY_SOURCE: source}
                            await client.send(dataclasses.replace(request, metadata=metadata))
                            log.add(request.message_id)
                            published_now += 1
                            answered = await wait_done(request.message_id)
                    else:  # published before an interruption: its reply may still be on its way
                        answered = await wait_done(request.message_id)
                    if not answered:
                        return  # the rest of this session would not see its history: leave it for --resume

            refresher = asyncio.ensure_future(keep_refreshing())
            try:
                await asyncio.gather(*(replay_session(turns) for turns in sessions.values()))
            finally:
                refresher.cancel()
            return ReplayOutcome(len(requests), published_now, refresh(), time.monotonic() - started)
        finally:
            await asyncio.to_thread(dead_tail.stop)

