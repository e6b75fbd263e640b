"""Slack ``chat.postMessage``: the reply goes into the thread the question came from."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.delivery.http import Permanent, Transient, citations_footer, post
from processors.records import ChatResponse
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
        response = await post(self.client, self.url, "slack chat.postMessage", json=self.payload(resp), headers=self.headers)
        data = response.json()
        if not data.get("ok"):
            error = str(data.get("error") or "unknown_error")
            if error in TRANSIENT_ERRORS:
                raise Transient(f"slack chat.postMessage: {error}")
            raise Permanent(f"slack chat.postMessage: {error}")
        return {"channel": str(data.get("channel") or resp.metadata["slack_channel"]), "ts": str(data.get("ts") or "")}
