"""`chatstream console` in headless Chromium on the real stack, as an on-call engineer uses it.

A real worker (scripted LLM), the real console command as a child process, Chromium over the DevTools
protocol: the page loads with the operator token; a turn sent during the test appears in the live
list; clicking it shows its waterfall from Jaeger with the four stage spans; a dead letter whose
original record is a good turn (as after an outage that is fixed now) is replayed from the page and
the worker answers it under its message id.

Set CHATSTREAM_SCREENSHOT_DIR to keep the page's screenshots.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from processors.records import Status
from stack.ports import free_port
from streams.codec import make_codec
from streams.deadletter import dead_letter_for
from streams.dev.worker_process import settings_env
from streams.message import InboundMessage
from tests.e2e.devtools import CHROMIUM, DevTools, devtools_page_url, start_chromium
from tests.e2e.turns import new_request

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def start_console(settings, home: Path, port: int, token: str, metrics_url: str) -> subprocess.Popen:
    env = settings_env(settings, CHATSTREAM_HOME=str(home), CHATSTREAM_CONSOLE_TOKEN=token,
                       CHATSTREAM_CONSOLE_BACKFILL="1000")
    log = open(home / "console.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "console", "--port", str(port),
                             "--metrics-url", metrics_url], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_console_ready(base: str, token: str, proc: subprocess.Popen, home: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, (home / "console.log").read_text()[-3000:]
        try:
            status = httpx.get(f"{base}/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=2).json()
            if status["tail_ready"]:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "console did not start: " + (home / "console.log").read_text()[-3000:]
        time.sleep(0.2)


def publish_dead_letter(settings, request) -> None:
    """A dead letter of a good turn, as an enrich outage leaves it: replaying it after the fix must answer it."""
    codec = make_codec(settings)
    original = InboundMessage(settings.topics.inbound, 0, 0, request.session_id.encode(), codec.encode(request), [])
    letter = dead_letter_for(original, "enrich", ConnectionError("Redis unavailable (outage, since fixed)"),
                             request.message_id)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(settings.topics.deadletter, codec.encode(letter), key=letter.key)
    assert producer.flush(10) == 0


@pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                    reason="Debian's chromium is not installed (apt-get install -y chromium)")
async def test_console_live_list_waterfall_and_dead_letter_replay(settings, worker, client, tmp_path) -> None:
    assert CHROMIUM is not None, "CI must have Debian's chromium: .ci/install-tools installs it"
    import websockets

    token, port = uuid.uuid4().hex, free_port()
    base = f"http://127.0.0.1:{port}"
    console = start_console(settings, tmp_path, port, token, worker.metrics_url)
    shots = tmp_path / "shots"
    shots.mkdir()
    user_data = Path(tempfile.mkdtemp(prefix="chatstream-console-chromium-"))
    browser = None
    try:
        await asyncio.to_thread(wait_console_ready, base, token, console, tmp_path)
        browser = start_chromium(f"{base}/#token={token}", user_data)
        ws_url = await asyncio.to_thread(devtools_page_url, user_data, browser)
        async with websockets.connect(ws_url, max_size=None) as ws:
            cdp = DevTools(ws)
            await cdp.until("document.body && document.body.dataset.ready === '1'", 30, "page did not load with the token")
            assert await cdp.js("document.getElementById('token-box').classList.contains('hidden')")
            assert await cdp.js("location.hash") == "", "the token must leave the address bar"

            # a turn sent now appears in the live list (the page refreshes itself every 5 s)
            turn = new_request("How do I reset my password?", f"web:console-{uuid.uuid4().hex[:8]}")
            reply = await client.ask(turn, 60)
            assert reply.status in (Status.ANSWERED, Status.FALLBACK)
            row = f"#turns tbody tr[data-message-id='{turn.message_id}']"
            await cdp.until(f"!!document.querySelector(\"{row}\")", 30, "the turn never appeared in the live list")
            await cdp.until(f"document.querySelector(\"{row}\").innerText.includes('{reply.status.value}')", 30,
                            "the turn's reply status never showed in the live list")

            # its waterfall: spans arrive in Jaeger a few seconds after the reply, so click until they are there
            t = settings.topics
            stage_spans = {f"{topic} process" for topic in (t.inbound, t.enriched, t.retrieved, t.generated)}
            names: set[str] = set()
            deadline = time.monotonic() + 45
            while not stage_spans <= names:
                assert time.monotonic() < deadline, f"waterfall lacks {stage_spans - names}; has {names}"
                await cdp.js(f"document.querySelector(\"{row}\").click()")
                await asyncio.sleep(2)
                names = set(await cdp.js(
                    "[...document.querySelectorAll('#waterfall .span-row[data-name]')].map(r => r.dataset.name)"))
            assert await cdp.js("document.getElementById('jaeger-link').classList.contains('hidden')"), \
                "the Go-module Jaeger serves a placeholder, so no 'open in Jaeger' link"
            await cdp.js("document.querySelector('#waterfall .span-row[data-index]').click()")
            assert "attributes" in await cdp.js("document.getElementById('span-detail').textContent")
            await cdp.screenshot(shots / "turns-waterfall.png")

            await cdp.js("document.querySelector(\"#tabs button[data-tab='metrics']\").click()")
            await cdp.until("document.querySelectorAll('#charts .uplot').length >= 5", 20, "no charts drawn")
            await cdp.screenshot(shots / "metrics.png")
            await cdp.js("document.querySelector(\"#tabs button[data-tab='questions']\").click()")
            await cdp.until("document.querySelectorAll('#q-stages tbody tr').length === 5", 20, "no stage times")
            await cdp.screenshot(shots / "questions.png")

            # a dead letter, replayed from the page, gets its reply
            lost = new_request("How do I export all my data?", f"web:console-{uuid.uuid4().hex[:8]}")
            await asyncio.to_thread(publish_dead_letter, settings, lost)
            await cdp.js("document.querySelector(\"#tabs button[data-tab='deadletters']\").click()")
            ref = None
            deadline = time.monotonic() + 30
            while ref is None:
                assert time.monotonic() < deadline, "the dead letter is not listed"
                await cdp.js("document.getElementById('dl-refresh').click()")
                await asyncio.sleep(1)
                ref = await cdp.js(
                    f"(() => {{ const l = (state.letters || []).find(l => l.message_id === '{lost.message_id}');"
                    f" return l ? l.ref : null; }})()")
            await cdp.js(f"document.querySelector(\"#dl-table tr[data-ref='{ref}'] .dl-pick\").click()")
            await cdp.js(f"document.querySelector(\"#dl-table tr[data-ref='{ref}']\").click()")
            assert lost.text in await cdp.js("document.getElementById('dl-detail').textContent"), "original decoded"
            await cdp.screenshot(shots / "deadletters.png")
            await cdp.js("document.getElementById('replay-btn').click()")
            await cdp.until("document.getElementById('dl-result').textContent.includes('replayed')", 20,
                            "the page never reported the replay")
            deadline = time.monotonic() + 60  # the client was not the sender: read what its reply tail collected
            while lost.message_id not in client.replies:
                assert time.monotonic() < deadline, "the replayed turn got no reply"
                await asyncio.sleep(0.2)
            (answer,) = client.replies[lost.message_id]
            assert answer.status in (Status.ANSWERED, Status.FALLBACK)
    finally:
        if browser is not None:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
        console.terminate()
        console.wait(20)
        shutil.rmtree(user_data, ignore_errors=True)
        keep = os.environ.get("CHATSTREAM_SCREENSHOT_DIR")
        if keep:
            shutil.copytree(shots, keep, dirs_exist_ok=True)
