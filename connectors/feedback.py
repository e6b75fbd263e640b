"""User satisfaction from the channels as ``ChatFeedback`` on ``chat.feedback``.

Joined to the turn by ``message_id``: the web page knows it (it got it from ``POST /v1/messages``);
a Slack reaction only names the bot's message (channel + ts), so deliver records
``slack_reply:{channel}:{ts} -> {message_id, session_id, user_id}`` in Redis when it posts a reply
and the gateway looks the reaction up there. A reaction on anything else is ignored.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from processors.records import ChatFeedback, FeedbackKind

log = logging.getLogger("chatstream.feedback")

THUMBS_UP = {"+1", "thumbsup", "white_check_mark", "heavy_check_mark"}
THUMBS_DOWN = {"-1", "thumbsdown", "x"}


def slack_reply_key(channel: str, ts: str) -> str:
    return f"slack_reply:{channel}:{ts}"


def reaction_kind(reaction: str) -> FeedbackKind | None:
    name = reaction.split("::", 1)[0]  # skin tones: "+1::skin-tone-2"
    if name in THUMBS_UP:
        return FeedbackKind.THUMBS_UP
    if name in THUMBS_DOWN:
        return FeedbackKind.THUMBS_DOWN
    return None


def feedback_from_body(data: dict[str, Any], channel: str) -> ChatFeedback:
    """Validate a web feedback body: {message_id, session_id, kind: up|down|csat, score?, comment?}."""
    message_id, session_id = data.get("message_id"), data.get("session_id")
    if not isinstance(message_id, str) or not message_id or not isinstance(session_id, str) or not session_id:
        raise ValueError("message_id and session_id are required strings")
    kind_name = str(data.get("kind", "")).lower()
    if kind_name in ("up", "thumbs_up"):
        kind, score = FeedbackKind.THUMBS_UP, 1
    elif kind_name in ("down", "thumbs_down"):
        kind, score = FeedbackKind.THUMBS_DOWN, -1
    elif kind_name == "csat":
        score = data.get("score")
        if not isinstance(score, int) or not 1 <= score <= 5:
            raise ValueError("csat needs an integer score from 1 to 5")
        kind = FeedbackKind.CSAT
    else:
        raise ValueError("kind must be up, down or csat")
    comment = data.get("comment") or ""
    if not isinstance(comment, str) or len(comment) > 2000:
        raise ValueError("comment must be a string of at most 2000 characters")
    return ChatFeedback(
        message_id=message_id[:128],
        session_id=session_id[:256],
        user_id=str(data.get("user_id") or session_id)[:256],
        channel=channel,
        kind=kind,
        score=score,
        comment=comment,
    )


async def slack_reaction_feedback(gw: Any, payload: dict[str, Any]) -> ChatFeedback | None:
    event = payload.get("event") or {}
    kind = reaction_kind(str(event.get("reaction") or ""))
    item = event.get("item") or {}
    if kind is None or item.get("type") != "message":
        gw.stats.incr("feedback.slack_ignored")
        return None
    bot = gw.settings.slack_bot_user_id
    if bot and event.get("item_user") not in (None, bot):
        gw.stats.incr("feedback.slack_ignored")
        return None
    if gw.redis is None:
        gw.stats.incr("feedback.slack_unjoinable")
        log.warning("slack reaction dropped: no Redis to find the turn it is about")
        return None
    raw = await gw.redis.get(slack_reply_key(str(item.get("channel")), str(item.get("ts"))))
    if raw is None:
        gw.stats.incr("feedback.slack_unknown_message")
        return None
    turn = json.loads(raw)
    team = payload.get("team_id") or ""
    return ChatFeedback(
        message_id=turn["message_id"],
        session_id=turn["session_id"],
        user_id=f"slack:{team}:{event.get('user', '')}",
        channel="slack",
        kind=kind,
        score=1 if kind is FeedbackKind.THUMBS_UP else -1,
    )


async def web_feedback(gw: Any, request: Request, raw: bytes) -> Response:
    """``POST /v1/feedback``: authenticated like ``/v1/messages`` or by the session's stream token."""
    from connectors.gateway.web import AuthError, authenticate, parse_json

    peer = request.client.host if request.client else None
    try:
        data = parse_json(raw)
        fb = feedback_from_body(data, "web")
    except ValueError as exc:
        gw.stats.refuse("web", "bad_feedback", 400, peer, str(exc))
        return JSONResponse({"error": str(exc)}, status_code=400)
    if not gw.stream_token_ok(fb.session_id, request.headers.get("x-stream-token")):
        try:
            caller = authenticate(gw, request)
        except AuthError as exc:
            gw.stats.refuse("web", f"feedback_{exc.reason}", 401, peer)
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        if not fb.session_id.startswith(f"web:{caller.tenant}:"):
            gw.stats.refuse("web", "feedback_other_tenant", 403, peer)
            return JSONResponse({"error": "forbidden"}, status_code=403)
    await gw.publisher.feedback(fb)
    gw.stats.incr("feedback.web")
    gw.stats.incr(f"feedback.{fb.kind.value.lower()}")
    return JSONResponse({"ok": True}, status_code=202)
