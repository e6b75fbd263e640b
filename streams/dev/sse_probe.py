"""For ``chatstream bench --sse``: a real gateway process and one SSE reader per session, so time to
first token is measured where a browser sees it (gateway SSE), not only on chat.deltas.

The gateway runs as its own process (``chatstream gateway``) as in production; the readers run in
the bench process and note, per message, when the first ``delta`` with text and the ``reply`` came.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx

from stack.ports import free_port
from streams.config import Settings

API_KEY = "bench-sse-key"


class GatewayProcess:
    def __init__(self, settings: Settings) -> None:
        from streams.dev.worker_process import settings_env

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = settings_env(
            settings,
            # the tenant whose help center is ingested: another one has no knowledge base to retrieve from
            CHATSTREAM_GATEWAY_API_KEYS=json.dumps({API_KEY: settings.tenant}),
            CHATSTREAM_GATEWAY_IP_RATE_PER_MINUTE="1e9",  # every stream opens from one address
            CHATSTREAM_GATEWAY_TENANT_RATE_PER_MINUTE="1e9",
        )
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "GatewayProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "gateway", "--port", str(self.port)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).json().get("sse_ready"):
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway's SSE tail did not become ready within 60 s")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class SSEReaders:
    """One event stream per session; ``first_delta_ms`` / ``reply_ms``: wall-clock ms per message."""

    def __init__(self, gateway_url: str, session_ids: list[str]) -> None:
        self.url = gateway_url
        self.session_ids = session_ids
        self.first_delta_ms: dict[str, float] = {}
        self.reply_ms: dict[str, float] = {}
        self.replies_seen: dict[str, int] = {}
        self._tasks: list[asyncio.Task] = []
        self._opened = 0
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(30, read=None),
            limits=httpx.Limits(max_connections=len(session_ids) + 10),
            headers={"X-API-Key": API_KEY},
        )

    async def start(self, timeout_s: float = 60) -> None:
        self._tasks = [asyncio.create_task(self._read(sid)) for sid in self.session_ids]
        deadline = time.monotonic() + timeout_s
        while self._opened < len(self.session_ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self._opened} of {len(self.session_ids)} SSE streams opened")
            await asyncio.sleep(0.05)

    async def _read(self, session_id: str) -> None:
        async with self._client.stream("GET", f"{self.url}/v1/sessions/{session_id}/events") as response:
            response.raise_for_status()
            self._opened += 1
            kind = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    now = time.time() * 1000
                    event = json.loads(line[5:])
                    mid = event["message_id"]
                    if kind == "delta" and event["text"] and mid not in self.first_delta_ms:
                        self.first_delta_ms[mid] = now
                    elif kind == "reply":
                        self.replies_seen[mid] = self.replies_seen.get(mid, 0) + 1
                        self.reply_ms.setdefault(mid, now)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
