"""`chatstream deliver` killed -9 again and again while it posts replies to Slack: none doubled, none lost.

A real deliver process (real Kafka, real Redis) posts to the Slack stand-in; it is killed with SIGKILL at
random moments while it posts (after 1-12 new posts each life) and started again until every reply is in Slack. Each restart joins
with a new consumer group, so it re-reads the topic from the start at once instead of waiting out the
dead member's 30 s session: every reply it had not marked is handled again, which is exactly the crash
window under test. Prints the figures (kills, replies handled again, replies found in Slack's history).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter

import pytest
from connector_fakes import SlackFake
from stack_helpers import produce, stack_settings, start_deliver

from processors.records import ChatRequest, ChatResponse, Status
from streams.codec import make_codec

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]

REPLIES = 150


def _start_deliver(s, slack: SlackFake, group: str, log) -> subprocess.Popen:
    return start_deliver(s, slack.url, group, log, slack_rate_per_s=100.0)


def test_deliver_killed_repeatedly_posts_each_reply_once(slack_fake: SlackFake, tmp_path) -> None:
    s = stack_settings()
    codec = make_codec(s)
    ids = [f"m-{uuid.uuid4().hex[:10]}" for _ in range(REPLIES)]
    for i, mid in enumerate(ids):
        req = ChatRequest(mid, f"slack:T1:C{i % 10}:1.0", "U1", "slack", "q", 0,
                          {"slack_channel": f"C{i % 10}", "slack_thread_ts": f"1700000000.{i % 10:06d}"})
        produce(s, s.topics.outbound, req.session_id,
                codec.encode(ChatResponse.for_request(req, f"reply {mid}", Status.ANSWERED)))

    def posted() -> Counter:
        with slack_fake.lock:
            return Counter(m["text"].split()[1] for m in slack_fake.messages)

    rng = random.Random(12)
    kills = starts = 0
    began = time.monotonic()
    with open(tmp_path / "deliver.log", "ab") as log:
        while True:
            before = slack_fake.posts
            proc = _start_deliver(s, slack_fake, f"deliver-{uuid.uuid4().hex[:8]}", log)
            starts += 1
            # kill it while it posts: after a few new posts (1-12), never before its first
            kill_after = rng.randint(1, 12)
            while len(posted()) < REPLIES and slack_fake.posts - before < kill_after:
                assert proc.poll() is None, f"deliver exited: see {tmp_path / 'deliver.log'}"
                assert time.monotonic() - began < 500, "not all replies delivered"
                time.sleep(0.002)
            if len(posted()) >= REPLIES:
                time.sleep(1.0)  # let it write its last markers, then stop it normally
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
                break
            time.sleep(rng.uniform(0, 0.02))  # anywhere in the post -> marker window, or just after
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            kills += 1
    time.sleep(2.0)  # requests a killed deliver had already sent may still be in the stand-in's threads
    counts = posted()
    doubled = {mid: n for mid, n in counts.items() if n > 1}
    lookups = len(slack_fake.lookups)
    print(f"\ndeliver kill -9: {REPLIES} replies, {kills} kills, {starts} starts, {slack_fake.posts} posts, "
          f"{lookups} history lookups after a crash, doubled {len(doubled)}, lost {REPLIES - len(counts)}, "
          f"{time.monotonic() - began:.0f} s")
    assert kills >= 3, "deliver finished before it could be killed a few times"
    assert sum(counts.values()) == len(slack_fake.messages) == slack_fake.posts
    assert set(counts) == set(ids), "lost replies"
    assert not doubled, f"posted more than once: {doubled}"
