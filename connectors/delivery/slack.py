"""Slack ``chat.postMessage``: the reply goes into the thread the question came from.

Each reply carries message metadata (``event_type`` ``chatstream_reply``, payload ``message_id``), so
that after a crash ``find_sent`` can look for it in the thread (``conversations.replies``) or the
channel (``conversations.history``) before sending it again. Those need the bot token's history
scopes (channels:history, groups:history, im:history, mpim:history).
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors.delivery.http import Permanent, Transient, check, citations_footer, post
from processors.records import ChatDelta, ChatResponse
from streams.config import secret

# Slack answers HTTP 200 {"ok": false, "error": ...}; these errors are worth a retry.
TRANSIENT_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
METADATA_EVENT = "chatstream_reply"
LOOKUP_PAGE = 200  # messages per history page; a crash window holds far fewer replies than that


class SlackClient:
    channel = "slack"

    def __init__(self, settings: Any, client: httpx.AsyncClient) -> None:
        token = secret(settings.slack_bot_token)
        if not token:
            raise ValueError("CHATSTREAM_SLACK_BOT_TOKEN is not set")
        self.base = settings.slack_api_url.rstrip("/")
        self.url = self.base + "/chat.postMessage"
        self.update_url = self.base + "/chat.update"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.client = client

    def payload(self, resp: ChatResponse) -> dict[str, Any]:
        md = resp.metadata
        channel = md.get("slack_channel")
        if not channel:
            raise Permanent("reply has no slack_channel in its metadata")
        text = resp.text + citations_footer(resp, lambda title, url: f"<{url}|{title}>")
        body: dict[str, Any] = {
            "channel": channel,
            "text": text[:39000],
            "unfurl_links": False,
            "metadata": {"event_type": METADATA_EVENT, "event_payload": {"message_id": resp.message_id}},
        }
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

    async def find_sent(self, resp: ChatResponse, since_ms: int) -> dict[str, str] | None:
        """The posted reply carrying ``resp.message_id`` in its metadata, posted after ``since_ms``."""
        md = resp.metadata
        channel, thread = md.get("slack_channel"), md.get("slack_thread_ts")
        if not channel:
            raise Permanent("reply has no slack_channel in its metadata")
        params: dict[str, Any] = {
            "channel": channel, "oldest": f"{since_ms / 1000:.6f}", "include_all_metadata": "true", "limit": LOOKUP_PAGE,
        }
        method = "conversations.history"
        if thread:
            method, params["ts"] = "conversations.replies", thread
        cursor = None
        while True:
            if cursor:
                params["cursor"] = cursor
            data = await self._get(method, params)
            for message in data.get("messages") or []:
                meta = message.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if meta.get("event_type") == METADATA_EVENT and payload.get("message_id") == resp.message_id:
                    return {"channel": str(channel), "ts": str(message.get("ts") or "")}
            cursor = (data.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None

    async def _get(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.client.get(f"{self.base}/{method}", params=params, headers=self.headers)
        except httpx.TransportError as exc:
            raise Transient(f"slack {method}: {type(exc).__name__}: {exc}") from exc
        check(response, f"slack {method}")
        data = response.json()
        if not data.get("ok"):
            error = str(data.get("error") or "unknown_error")
            raise (Transient if error in TRANSIENT_ERRORS else Permanent)(f"slack {method}: {error}")
        return data

    # --- a provisional answer, edited in place (connectors.delivery.drafts) ----------------------
    # Placeholders carry no reply metadata: ``find_sent`` must never take a draft for the reply.

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
        """The authoritative reply replaces the placeholder (same message, final text, reply metadata).

        An edit is idempotent (the same final text again), so a redelivery after a crash simply edits again.
        """
        payload = self.payload(resp)
        body = {"channel": handle["channel"], "ts": handle["ts"], "text": payload["text"], "metadata": payload["metadata"]}
        return await self._call(self.update_url, "chat.update", body, resp.metadata)
