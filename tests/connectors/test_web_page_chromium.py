"""The chat page in headless Chromium: type a question, see the answer appear.

The browser talks to a real gateway (real producer, real SSE tail of chat.outbound) on the local
Kafka; a small thread plays the pipeline's part (chat.inbound -> a ChatResponse on chat.outbound).
Chromium is driven over the DevTools protocol: keys are typed with ``Input.insertText``, the send
button clicked, and the page's DOM polled until the reply is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from stack_helpers import fake_pipeline, stack_settings

from connectors.gateway.app import create_app
from tests.e2e.devtools import CHROMIUM, DevTools, devtools_page_url, start_chromium

pytestmark = pytest.mark.stack

# On a developer machine without a browser the test is skipped with the reason; in CI (.ci/install-tools
# installs chromium) a missing browser is a failure, never a silent skip.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (apt-get install -y chromium)",
)


@needs_chromium
async def test_type_a_question_and_see_the_answer(serve):
    assert CHROMIUM is not None, "CI must have Debian's chromium: .ci/install-tools installs it"
    s = stack_settings(gateway_api_keys={"page-key": "acme"})
    app = create_app(s)
    served = serve(app)
    assert await app.state.tail.wait_ready(30), "the SSE tail never got its partitions"

    stop = threading.Event()
    answered: list = []
    pipeline = threading.Thread(target=fake_pipeline, args=(s, stop, answered), daemon=True)
    pipeline.start()
    async with chromium_page(served, stop, pipeline) as cdp:
        await ask(cdp, "How do I reset my password?")
        deadline = time.monotonic() + 30
        reply = None
        while reply is None:
            if time.monotonic() > deadline:
                log_text = await cdp.js("document.getElementById('log').innerText")
                error_text = await cdp.js("document.getElementById('error').innerText")
                pytest.fail(f"no answer shown; page log: {log_text!r}, error: {error_text!r}")
            reply = await cdp.js("(() => { const r = document.querySelector('.reply'); return r && r.innerText; })()")
            await asyncio.sleep(0.1)
        question = await cdp.js("document.querySelector('.user').dataset.messageId")
        answer_id = await cdp.js("document.querySelector('.reply').dataset.messageId")

    assert "To reset your password, open Settings > Security." in reply
    assert "you asked: How do I reset my password?" in reply
    assert "Resetting your password" in reply  # the citation is shown
    assert question == answer_id == answered[0].message_id
    assert answered[0].tenant == "acme" and answered[0].channel == "web"


STREAMED = ["To", " reset", " your", " password,", " open", " Settings", " >", " Security", " and", " choose",
            " Reset."]


@needs_chromium
@pytest.mark.parametrize("status", ["ANSWERED", "BLOCKED"])
async def test_the_answer_grows_as_it_is_written_then_the_reply_replaces_it(serve, status):
    """Provisional text appears piece by piece; the final reply replaces it (and retracts it when BLOCKED)."""
    assert CHROMIUM is not None, "CI must have Debian's chromium: .ci/install-tools installs it"
    final_text = "Sorry, I can't help with that." if status == "BLOCKED" else None
    seen, bubbles = await answer_over_time(serve, pieces=STREAMED, status=status, final_text=final_text)

    provisional = [text for cls, text in seen if "provisional" in cls]
    lengths = [len(t) for t in provisional]
    assert len(provisional) >= 3 and lengths == sorted(lengths) and lengths[0] < lengths[-1], seen
    assert all("".join(STREAMED).startswith(t) for t in provisional)
    final_cls, final_shown = seen[-1]
    assert "provisional" not in final_cls and bubbles == 1  # replaced in place, not a second bubble
    if status == "BLOCKED":
        assert final_shown.startswith("Sorry, I can't help with that.") and "Security" not in final_shown
    else:
        assert final_shown.startswith("To reset your password, open Settings > Security.")


REDONE = ["Open", " Settings,", " then", " Security,", " then", " Reset."]


@needs_chromium
async def test_a_turn_generated_again_replaces_the_provisional_text(serve):
    """The worker died mid-answer and the turn was generated again with other words: the page shows
    the first attempt's text, then the second one's from its start, never the two mixed, and neither
    a late piece of the first attempt nor its seq 0 sent again by a zombie writer takes the text back."""
    assert CHROMIUM is not None, "CI must have Debian's chromium: .ci/install-tools installs it"
    seen, bubbles = await answer_over_time(serve, pieces=STREAMED[:4], redo=REDONE, final_text="".join(REDONE))

    provisional = [text for cls, text in seen if "provisional" in cls]
    first, second = "".join(STREAMED[:4]), "".join(REDONE)
    assert all(first.startswith(t) or second.startswith(t) for t in provisional), provisional
    assert any(first.startswith(t) and not second.startswith(t) for t in provisional)  # the first attempt was shown
    assert second.startswith(provisional[-1]) and "late" not in " ".join(provisional)
    assert seen[-1][1].startswith(second) and bubbles == 1


@needs_chromium
async def test_the_page_drops_a_superseded_attempts_pieces_even_its_seq_0(serve):
    """The page's own copy of ``ChatDelta.step`` (the hub in front of it drops these already; a page
    reading a replay or another hub must not show them either): fed straight to ``showDelta``."""
    assert CHROMIUM is not None, "CI must have Debian's chromium: .ci/install-tools installs it"
    from processors.records import new_attempt_id

    older, newer = new_attempt_id(1_700_000_000_000), new_attempt_id(1_700_000_020_000)
    deltas = [(older, 0, "Old start"), (newer, 0, "Open"), (newer, 1, " Settings"), (older, 1, " old late"),
              (older, 0, "zombie start"), (newer, 2, " now.")]
    s = stack_settings(gateway_api_keys={"page-key": "acme"})
    served = serve(create_app(s))
    stop, idle = threading.Event(), threading.Thread(target=lambda: None)
    idle.start()
    async with chromium_page(served, stop, idle) as cdp:
        deadline = time.monotonic() + 20
        while await cdp.js("typeof showDelta") != "function":  # the page's script has run
            assert time.monotonic() < deadline, "the chat page never loaded"
            await asyncio.sleep(0.05)
        shown = []
        for attempt, seq, text in deltas:
            shown.append(await cdp.js(
                f"(() => {{ showDelta({{message_id: 'm1', attempt: '{attempt}', seq: {seq}, text: '{text}'}});"
                " return document.querySelector('.reply').innerText; })()"
            ))
    assert shown == ["Old start", "Open", "Open Settings", "Open Settings", "Open Settings", "Open Settings now."]


async def answer_over_time(serve, **pipeline: object) -> tuple[list[tuple[str, str]], int]:
    """Ask on the page while a fake pipeline streams as told (``fake_pipeline``'s keywords, pieces
    0.25 s apart): the (class, text) of the answer bubble each time it changed, until the final reply,
    and how many answer bubbles the page has then."""
    s = stack_settings(gateway_api_keys={"page-key": "acme"})
    app = create_app(s)
    served = serve(app)
    assert await app.state.tail.wait_ready(30), "the SSE tail never got its partitions"
    stop = threading.Event()
    thread = threading.Thread(target=fake_pipeline, args=(s, stop, []), kwargs={"piece_gap_s": 0.25, **pipeline}, daemon=True)
    thread.start()
    async with chromium_page(served, stop, thread) as cdp:
        await ask(cdp, "How do I reset my password?")
        seen: list[tuple[str, str]] = []
        deadline = time.monotonic() + 30
        while not seen or "provisional" in seen[-1][0]:
            assert time.monotonic() < deadline, f"no final reply; seen {seen}"
            state = await cdp.js(
                "(() => { const r = document.querySelector('.reply'); return r && [r.className, r.innerText]; })()"
            )
            if state and (not seen or tuple(state) != seen[-1]):
                seen.append(tuple(state))
            await asyncio.sleep(0.05)
        bubbles = await cdp.js("document.querySelectorAll('.reply').length")
    return seen, bubbles


async def ask(cdp: "DevTools", text: str) -> None:
    deadline = time.monotonic() + 20
    while await cdp.js("document.readyState") != "complete" or not await cdp.js("!!document.getElementById('text')"):
        assert time.monotonic() < deadline, "page did not load"
        await asyncio.sleep(0.1)
    await cdp.js("document.getElementById('apikey').focus()")
    await cdp.call("Input.insertText", text="page-key")
    await cdp.js("document.getElementById('text').focus()")
    await cdp.call("Input.insertText", text=text)
    await cdp.js("document.getElementById('send').click()")


@contextlib.asynccontextmanager
async def chromium_page(served, stop: threading.Event, pipeline: threading.Thread):
    """Headless Chromium on the gateway's page, driven over DevTools; stops the fake pipeline after."""
    import websockets

    user_data = Path(tempfile.mkdtemp(prefix="chatstream-chromium-"))
    proc = start_chromium(served.url + "/", user_data)
    try:
        ws_url = await asyncio.to_thread(devtools_page_url, user_data, proc)
        async with websockets.connect(ws_url, max_size=None) as ws:
            yield DevTools(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        stop.set()
        pipeline.join(10)
        shutil.rmtree(user_data, ignore_errors=True)
