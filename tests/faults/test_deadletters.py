"""Dead letters: listed with their reasons, and replayed after a fix keeping their message ids."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid

import pytest

from processors.records import Status
from streams.dev.worker_process import settings_env
from tests.audit import audit_when_done
from tests.e2e.turns import new_request
from tests.faults.conftest import HOME, ROOT, pipeline_settings

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]


def chatstream(settings, *args: str) -> subprocess.CompletedProcess:
    env = settings_env(settings, CHATSTREAM_HOME=str(HOME), CHATSTREAM_OTLP_ENDPOINT="")
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


async def dlq_list_until(settings, needle: str, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await asyncio.to_thread(chatstream, settings, "dlq", "list")
        assert result.returncode == 0, result.stdout + result.stderr
        if needle in result.stdout:
            return result.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not in `dlq list` within {timeout_s} s:\n{result.stdout}")
        await asyncio.sleep(0.5)


async def test_dlq_list_and_replay_after_the_fix(fault_stack, llm, workers, client_for) -> None:
    settings = pipeline_settings(fault_stack, llm)
    worker = workers.start(settings)
    client = await client_for(settings)
    sid = f"fax:{uuid.uuid4().hex[:8]}"
    fax = new_request("Can I get my invoice by fax?", sid, channel="fax")
    await client.send(fax)
    await client.send_raw(b"\xde\xad\xbe\xef not a record", key=sid)
    first = new_request("How do I reset my password?", f"web:{uuid.uuid4().hex[:8]}")
    good = await client.ask(first, 60)
    assert good.status is Status.ANSWERED

    listing = await dlq_list_until(settings, "unknown channel 'fax'")
    assert "not Avro single-object" in listing or "cannot read" in listing, listing
    ref = None
    lines = listing.splitlines()
    for i, line in enumerate(lines):
        if f"message_id={fax.message_id}" in line:
            assert "stage=enrich" in line and "unknown channel 'fax'" in lines[i + 1], listing
            ref = re.match(r"\s*(\d+:\d+)\s", line).group(1)  # type: ignore[union-attr]
    assert ref, f"the fax turn is not listed:\n{listing}"
    assert fax.message_id not in client.replies

    # replaying before the fix only dead-letters it again; "the fix" is a worker that knows the channel
    code = await asyncio.to_thread(worker.terminate, 30)
    assert code == 0
    fixed_at = time.monotonic()
    workers.start(settings, CHATSTREAM_CHANNELS='["web", "cli", "fax"]')
    replay = await asyncio.to_thread(chatstream, settings, "dlq", "replay", ref)
    assert replay.returncode == 0 and "replayed 1 dead letter" in replay.stdout, replay.stdout + replay.stderr
    reply = await client.wait_reply(fax.message_id, 60)
    recovered = time.monotonic() - fixed_at
    assert reply.message_id == fax.message_id and reply.channel == "fax"
    assert reply.status in (Status.ANSWERED, Status.FALLBACK), reply
    result = await audit_when_done(client, [fax, first], timeout_s=60)
    result.assert_clean()  # the replayed turn answered exactly once, under its own message id

    listing = await dlq_list_until(settings, "replays=0")
    assert listing.count(f"message_id={fax.message_id}") == 1, "a successful replay adds no new dead letter"
    print(
        f"\nFAULT-REPORT | unknown channel + garbage bytes | dead-lettered with reasons (`dlq list`); after the fix "
        f"`dlq replay {ref}` answered it under its message id | lost 0/1 | doubled 0 | recover {recovered:.1f} s",
        flush=True,
    )
