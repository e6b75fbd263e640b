"""A Slack placeholder handed from one `chatstream deliver` to another: one message per turn, no text twice,
the final reply last.

Real deliver processes (real Kafka, real Redis) and the Slack stand-in. The first deliver posts and
edits the placeholders of 20 turns, then is killed with SIGKILL (nothing committed after its last
pieces). The turns are redone: every piece is produced again, then the final replies. A second deliver
(a new consumer group, so it re-reads everything from the start: the first attempt's pieces, the redo's,
the replies) takes over. Each turn must end as one Slack message (no second placeholder) whose edits
only ever grew the text (no piece repeated) up to the whole answer, and whose last edit is the final
reply. (The replies are produced once the second deliver shows the whole answer: deliver handles
chat.deltas and chat.outbound partitions side by side, so a reply may overtake pieces, which are then
dropped; test_delivery_drafts.py covers that race.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pytest
from connector_fakes import SlackFake
from confluent_kafka import Producer
from stack_helpers import stack_settings
from stack_helpers import start_deliver as start_real_deliver

from processors.records import ChatDelta, ChatRequest, ChatResponse, Status
from streams.codec import make_codec

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

TURNS = 20
PIECES = ["To reset", " your password,", " open", " Settings", " >", " Security."]
SHOWN_BEFORE_THE_KILL = 3


def start_deliver(s, slack: SlackFake, group: str, log) -> subprocess.Popen:
    # every piece is an edit: the most chances to race
    return start_real_deliver(s, slack.url, group, log, slack_rate_per_s=200.0, CHATSTREAM_DELIVER_DRAFT_UPDATE_INTERVAL_S="0")


def wait_until(predicate, timeout_s: float, what: str, proc: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, f"deliver exited: see {log_path}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_redone_turn_taken_over_by_another_deliver_keeps_one_message_and_ends_with_the_reply(
        slack_fake: SlackFake, tmp_path) -> None:
    s = stack_settings()
    codec = make_codec(s)
    turns = []
    for i in range(TURNS):
        md = {"slack_channel": f"C{i % 5}", "slack_thread_ts": f"1700000000.{i:06d}"}
        turns.append(ChatRequest(f"m-{uuid.uuid4().hex[:10]}", f"slack:T1:C{i % 5}:{i}", "U1", "slack", "q", 0, md))

    def produce(records: list[tuple[str, str, bytes]]) -> None:
        producer = Producer({"bootstrap.servers": s.kafka_bootstrap, "acks": "all", "enable.idempotence": True})
        for topic, key, value in records:
            producer.produce(topic, value, key=key)
        assert producer.flush(20) == 0

    def pieces(upto: int) -> list[tuple[str, str, bytes]]:
        return [(s.topics.deltas, req.session_id,
                 codec.encode(ChatDelta(req.message_id, req.session_id, "slack", seq, piece, metadata=req.metadata)))
                for req in turns for seq, piece in enumerate(PIECES[:upto])]

    def texts() -> list[str]:
        with slack_fake.lock:
            return [m["text"] for m in slack_fake.messages]

    began = time.monotonic()
    finals = {req.message_id: f"To reset your password, open Settings > Security. ({req.message_id})" for req in turns}
    log_path = tmp_path / "deliver.log"
    with open(log_path, "ab") as log:
        first = start_deliver(s, slack_fake, f"deliver-{uuid.uuid4().hex[:8]}", log)
        try:
            produce(pieces(SHOWN_BEFORE_THE_KILL))
            shown = "".join(PIECES[:SHOWN_BEFORE_THE_KILL])
            wait_until(lambda: texts().count(shown) == TURNS, 60, "every placeholder to show 3 pieces", first, log_path)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
        posts_before = slack_fake.posts
        first_phase_s = time.monotonic() - began

        produce(pieces(len(PIECES)))  # the turns redone: every piece again
        second = start_deliver(s, slack_fake, f"deliver-{uuid.uuid4().hex[:8]}", log)
        try:
            full = "".join(PIECES)
            wait_until(lambda: texts().count(full) == TURNS, 60, "every placeholder to show the whole answer",
                       second, log_path)
            produce([(s.topics.outbound, req.session_id,
                      codec.encode(ChatResponse.for_request(req, finals[req.message_id], Status.ANSWERED)))
                     for req in turns])
            wait_until(lambda: sum(t.startswith(tuple(finals.values())) for t in texts()) == TURNS, 60,
                       "every final reply", second, log_path)
            time.sleep(1.0)  # anything still in flight would land now (there must be nothing)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)

    with slack_fake.lock:
        messages = list(slack_fake.messages)
        edits = list(slack_fake.edits)
    by_ts = {m["ts"]: m for m in messages}
    print(f"\ndeliver takeover: {TURNS} turns, {posts_before} placeholders posted before the kill, "
          f"{slack_fake.posts} posts in all, {len(edits)} edits; first deliver {first_phase_s:.0f} s, "
          f"in all {time.monotonic() - began:.0f} s")
    assert slack_fake.posts == posts_before == TURNS, "a second placeholder (or reply) was posted"
    assert sorted(m["text"] for m in messages) == sorted(finals.values())
    for ts, message in by_ts.items():
        mine = [text for t, text in edits if t == ts]
        provisional, last = mine[:-1], mine[-1]
        assert last == message["text"] and last in finals.values(), mine  # the final reply is the last edit
        assert all(full.startswith(text) for text in provisional), mine  # pieces of the answer, none twice
        assert all(len(a) < len(b) for a, b in zip(provisional, provisional[1:])), mine  # only ever grew
        assert provisional[-1] == full, mine  # the second deliver continued the first one's placeholder
