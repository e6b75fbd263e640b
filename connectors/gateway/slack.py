"""Slack Events API: ``POST /slack/events``.

Verification is Slack's signing secret scheme v0: ``v0=HMAC-SHA256(secret, "v0:{ts}:{raw body}")``
with the timestamp within ``slack_replay_window_s`` of now. A signature already seen is a replay
unless Slack marks the request as its own retry (``X-Slack-Retry-Num``); retries of an event that
was already published are answered 200 without publishing again, and the message id is derived
from the Slack message itself (team, channel, ts) so even a second publish is one turn downstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectors.gateway.context import Gateway, error
from connectors.gateway.publish import message_id_for
from processors.records import ChatRequest, now_ms
from streams.config import secret

log = logging.getLogger("chatstream.gateway.slack")

MENTION = re.compile(r"<@[A-Z0-9]+>\s*")


class SlackAuthError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sign(signing_secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def verify(signing_secret: str, headers: Any, body: bytes, window_s: int, now: float | None = None) -> str:
    """Check the v0 signature and the replay window; returns the signature (the replay key)."""
    timestamp = headers.get("x-slack-request-timestamp")
    signature = headers.get("x-slack-signature")
    if not timestamp or not signature:
        raise SlackAuthError("missing_signature")
    try:
        ts = int(timestamp)
    except ValueError:
        raise SlackAuthError("bad_timestamp") from None
    if abs((now if now is not None else time.time()) - ts) > window_s:
        raise SlackAuthError("expired")
    if not hmac.compare_digest(sign(signing_secret, timestamp, body), signature):
        raise SlackAuthError("bad_signature")
    return signature


def session_id_for(team: str, channel: str, thread_ts: str) -> str:
    return f"slack:{team}:{channel}:{thread_ts}"


def turn_from_event(gw: Gateway, payload: dict[str, Any]) -> ChatRequest | None:
    """The user turn an event carries, or None for events the bot must not answer."""
    event = payload.get("event") or {}
    kind = event.get("type")
    if kind not in ("message", "app_mention"):
        return None
    if event.get("bot_id") or event.get("subtype") or not event.get("user"):
        return None  # bots (ourselves included), edits, joins, deletions
    if gw.settings.slack_bot_user_id and event.get("user") == gw.settings.slack_bot_user_id:
        return None
    if kind == "message" and event.get("channel_type") not in ("im", "mpim"):
        return None  # in channels the bot answers mentions only (the app_mention event)
    team = payload.get("team_id") or event.get("team") or ""
    channel = event.get("channel") or ""
    ts = event.get("ts") or ""
    if not (team and channel and ts):
        return None
    text = MENTION.sub("", event.get("text") or "").strip()
    if not text:
        return None
    thread_ts = event.get("thread_ts") or ts
    return ChatRequest(
        message_id=message_id_for("slack", team, channel, ts),
        session_id=session_id_for(team, channel, thread_ts),
        user_id=f"slack:{team}:{event['user']}",
        channel="slack",
        text=text,
        sent_at=now_ms(),
        metadata={
            "slack_team": team,
            "slack_channel": channel,
            "slack_thread_ts": thread_ts,
            "slack_ts": ts,
            "slack_user": event["user"],
            "slack_event_id": payload.get("event_id") or "",
        },
        tenant=gw.settings.tenant,
    )


async def _once(gw: Gateway, event_id: str, work: Any) -> None:
    """Run ``work`` once per Slack event id; a retry arriving meanwhile waits for the same result."""
    assert gw.seen is not None
    if event_id in gw.seen:
        gw.stats.incr("slack.retry_deduplicated")
        return
    running = gw.inflight.get(event_id)
    if running is not None:
        gw.stats.incr("slack.retry_joined")
        await asyncio.shield(running)
        return
    task = asyncio.ensure_future(work())
    gw.inflight[event_id] = task
    try:
        await asyncio.shield(task)
        gw.seen.add(event_id)
    finally:
        gw.inflight.pop(event_id, None)


async def events(gw: Gateway, request: Request, raw: bytes) -> Response:
    peer = request.client.host if request.client else None
    signing_secret = secret(gw.settings.slack_signing_secret)
    if not signing_secret:
        return error(404, "slack channel disabled")
    try:
        signature = verify(signing_secret, request.headers, raw, gw.settings.slack_replay_window_s)
    except SlackAuthError as exc:
        gw.stats.refuse("slack", exc.reason, 401, peer)
        return error(401, "invalid signature")
    retry_num = request.headers.get("x-slack-retry-num")
    assert gw.seen is not None
    replay_key = f"slack-sig:{signature}"
    if replay_key in gw.seen and retry_num is None:
        gw.stats.refuse("slack", "replayed", 401, peer)
        return error(401, "replayed request")
    gw.seen.add(replay_key)
    try:
        payload = json.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("not an object")
    except ValueError:
        gw.stats.refuse("slack", "bad_json", 400, peer)
        return error(400, "body is not a JSON object")

    kind = payload.get("type")
    if kind == "url_verification":
        return JSONResponse({"challenge": str(payload.get("challenge", ""))})
    if kind != "event_callback":
        return Response(status_code=200)
    event = payload.get("event") or {}
    event_id = str(payload.get("event_id") or "")

    if event.get("type") in ("reaction_added",):
        from connectors.feedback import slack_reaction_feedback

        async def publish_feedback() -> None:
            fb = await slack_reaction_feedback(gw, payload)
            if fb is not None:
                await gw.publisher.feedback(fb)
                gw.stats.incr("feedback.slack")
                gw.stats.incr(f"feedback.{fb.kind.value.lower()}")

        await _once(gw, f"slack-event:{event_id}", publish_feedback)
        return Response(status_code=200)

    req = turn_from_event(gw, payload)
    if req is None:
        gw.stats.incr("slack.ignored")
        return Response(status_code=200)
    if len(req.text) > gw.settings.max_text_chars:
        gw.stats.refuse("slack", "text_too_long", 200, peer, f"{len(req.text)} chars")
        return Response(status_code=200)  # a non-2xx would only make Slack retry the same text
    limited = gw.tenant_limited("slack", req.metadata["slack_team"], peer)
    if limited is not None:
        return limited

    async def publish() -> None:
        await gw.publisher.request(req)
        gw.stats.incr("accepted.slack")

    await _once(gw, f"slack-event:{event_id or req.message_id}", publish)
    return Response(status_code=200)
