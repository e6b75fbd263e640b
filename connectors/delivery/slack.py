"""Slack ``chat.postMessage``: the reply goes into the thread the question came from."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.delivery.http import Permanent, Transient, citations_footer, post
from processors.records import ChatDelta, ChatResponse
from streams.config import secret

# Slack answers HTTP 200 {"ok": false, "error": ...}; these errors are worth a retry.
TRANSIENT_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}


class SlackClient:
    channel = "slack"

    def __init__(self, settings: Any, client: httpx.AsyncClient) -> None:
        token = secret(settings.slack_bot_token)
        if not token:
            raise ValueError("CHATSTREAM_SLACK_BOT_TOKEN is not set")
        self.url = settings.slack_api_url.rstrip("/") + "/chat.postMessage"
        self.update_url = settings.slack_api_url.rstrip("/") + "/chat.update"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.client = client

    def payload(self, resp: ChatResponse) -> dict[str, Any]:
        md = resp.metadata
        channel = md.get("slack_channel")
        if not channel:
            raise Permanent("reply has no slack_channel in its metadata")
        text = resp.text + citations_footer(resp, lambda title, url: f"<{url}|{title}>")
        body: dict[str, Any] = {"channel": channel, "text": text[:39000], "unfurl_links": False}
        if md.get("slack_thread_ts"):
            body["thread_ts"] = md["slack_thread_ts"]
        return body

    async def send(self, resp: ChatResponse) -> dict[str, str]:
        return await self._call(self.url, "chat.postMessage", self.payload(resp), resp.metadata)

    async def _call(self, url: str, method: str, body: dict[str, Any], md: dict[str, str]) -> dict[str, str]:
        response = await post(self.client, url, f"slack {method}", json=body, headers=self.headers)
        data = response.json()
        if not data.get("ok"):
            error = str(data.get("error") or "unknown_error")
            if error in TRANSIENT_ERRORS:
                raise Transient(f"slack {method}: {error}")
            raise Permanent(f"slack {method}: {error}")
        return {"channel": str(data.get("channel") or body.get("channel") or md.get("slack_channel")),
                "ts": str(data.get("ts") or body.get("ts") or "")}

    # --- a provisional answer, edited in place (connectors.delivery.drafts) ----------------------

    async def post_draft(self, delta: ChatDelta, text: str) -> dict[str, str]:
        channel = delta.metadata.get("slack_channel")
        if not channel:
            raise Permanent("delta has no slack_channel in its metadata")
        body: dict[str, Any] = {"channel": channel, "text": text[:39000], "unfurl_links": False}
        if delta.metadata.get("slack_thread_ts"):
            body["thread_ts"] = delta.metadata["slack_thread_ts"]
        return await self._call(self.url, "chat.postMessage", body, delta.metadata)

    async def update_draft(self, handle: dict[str, str], delta: ChatDelta, text: str) -> None:
        body = {"channel": handle["channel"], "ts": handle["ts"], "text": text[:39000]}
        await self._call(self.update_url, "chat.update", body, delta.metadata)

    async def finish_draft(self, handle: dict[str, str], resp: ChatResponse) -> dict[str, str]:
        """The authoritative reply replaces the placeholder (same message, final text)."""
        body = self.payload(resp)
        body = {"channel": handle["channel"], "ts": handle["ts"], "text": body["text"]}
        return await self._call(self.update_url, "chat.update", body, resp.metadata)
