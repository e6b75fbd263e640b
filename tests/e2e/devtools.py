"""Just enough of the Chrome DevTools protocol to drive headless Chromium from a test.

Shared by the chat page test (tests/connectors) and the console test (tests/e2e).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


class DevTools:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, expression: str, timeout_s: float, what: str, every_s: float = 0.2):
        """Poll ``expression`` until it is truthy; fail with ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} (after {timeout_s:.0f} s)")
            await asyncio.sleep(every_s)

    async def screenshot(self, path: Path) -> None:
        data = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(data["data"]))


def start_chromium(url: str, user_data: Path, width: int = 1400, height: int = 1000) -> subprocess.Popen:
    return subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--window-size={width},{height}", f"--user-data-dir={user_data}",
         "--remote-debugging-port=0", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def devtools_page_url(user_data: Path, proc: subprocess.Popen, timeout_s: float = 30) -> str:
    port_file = user_data / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while not port_file.exists() or not port_file.read_text().strip():
        assert proc.poll() is None, f"chromium exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "chromium did not open its DevTools port"
        time.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        assert time.monotonic() < deadline, "no page target"
        time.sleep(0.1)
