"""Measure the console page with a full store (not a test: it prints figures).

    python -m streams.console.synthetic --turns 10000 --db DIR/console.sqlite3
    CHATSTREAM_HOME=DIR CHATSTREAM_CONSOLE_TOKEN=T chatstream console --port P &
    python -m tests.e2e.measure_console_load --url http://127.0.0.1:P --token T [--shots DIR]

Prints, per run, the time from navigation to the live list filled, to the Metrics tab with every
chart drawn, and to the three questions filled, plus the API's own response times.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from tests.e2e.devtools import DevTools, devtools_page_url, start_chromium


async def measure(url: str, token: str, shots: Path | None) -> dict[str, float]:
    import websockets

    user_data = Path(tempfile.mkdtemp(prefix="chatstream-console-measure-"))
    browser = start_chromium("about:blank", user_data)
    try:
        ws_url = await asyncio.to_thread(devtools_page_url, user_data, browser)
        async with websockets.connect(ws_url, max_size=None) as ws:
            cdp = DevTools(ws)
            await cdp.call("Page.enable")
            started = time.perf_counter()
            await cdp.call("Page.navigate", url=f"{url}/#token={token}")
            await cdp.until("document.querySelectorAll('#turns tbody tr').length >= 50", 60, "live list not filled", 0.02)
            listed = time.perf_counter() - started
            if shots:
                await cdp.screenshot(shots / "10k-turns.png")
            t0 = time.perf_counter()
            await cdp.js("document.querySelector(\"#tabs button[data-tab='metrics']\").click()")
            await cdp.until("document.querySelectorAll('#charts .chart').length >= 17 && "
                            "document.querySelectorAll('#charts .uplot').length >= 10", 60, "charts not drawn", 0.02)
            charts = time.perf_counter() - t0
            if shots:
                await cdp.screenshot(shots / "10k-metrics.png")
            t0 = time.perf_counter()
            await cdp.js("document.querySelector(\"#tabs button[data-tab='questions']\").click()")
            await cdp.until("document.querySelectorAll('#q-failing tbody tr td').length > 1", 60, "questions empty", 0.02)
            questions = time.perf_counter() - t0
            if shots:
                await cdp.screenshot(shots / "10k-questions.png")
    finally:
        browser.terminate()
        browser.wait(10)
        shutil.rmtree(user_data, ignore_errors=True)
    auth = {"Authorization": f"Bearer {token}"}
    api = {}
    for path in ("/api/turns?limit=100", "/api/overview?range=15m", "/api/questions?range=15m"):
        t0 = time.perf_counter()
        httpx.get(url + path, headers=auth, timeout=30).raise_for_status()
        api[path] = time.perf_counter() - t0
    return {"page to live list": listed, "metrics tab, all charts": charts, "three questions tab": questions,
            **{f"API {k}": v for k, v in api.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shots", type=Path)
    args = parser.parse_args()
    turns = httpx.get(f"{args.url}/api/status", headers={"Authorization": f"Bearer {args.token}"}).json()["store_turns"]
    print(f"store: {turns} turns")
    for run in range(args.runs):
        figures = asyncio.run(measure(args.url, args.token, args.shots if run == args.runs - 1 else None))
        print(f"run {run + 1}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in figures.items()))


if __name__ == "__main__":
    main()
