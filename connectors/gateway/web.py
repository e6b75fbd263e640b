"""The web channel: ``POST /v1/messages`` (202 + message_id) and ``GET /v1/sessions/{id}/events``.

Callers authenticate with a per-tenant API key (``X-API-Key`` or ``Authorization: Bearer``) or an
HS256 JWT signed with ``gateway_jwt_secret`` (claims: ``sub`` user, ``tenant``, ``exp`` required).
Web session ids are namespaced ``web:{tenant}:...`` so a web caller can never write into another
tenant's (or another channel's) conversation. The SSE stream takes the per-session ``stream_token``
returned by ``POST /v1/messages`` because an ``EventSource`` cannot send headers, and an API key in
a URL would end up in access logs.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from connectors.gateway.context import Gateway, error
from connectors.gateway.publish import message_id_for
from processors.records import ChatRequest, now_ms
from streams.config import secret

SESSION_PART = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class Caller:
    tenant: str
    user_id: str | None


class AuthError(Exception):
    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def authenticate(gw: Gateway, request: Request) -> Caller:
    """The caller's tenant from an API key or a JWT; raises ``AuthError`` with a loggable reason."""
    settings = gw.settings
    token = request.headers.get("x-api-key")
    if token is None:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
    if not token:
        raise AuthError("missing_credentials")
    tenant = settings.gateway_api_keys.get(token)
    if tenant is not None:
        return Caller(tenant=tenant, user_id=None)
    jwt_secret = secret(settings.gateway_jwt_secret)
    if jwt_secret and token.count(".") == 2:
        try:
            claims = jwt.decode(token, jwt_secret, algorithms=["HS256"], options={"require": ["exp"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("expired_token") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid_token:{type(exc).__name__}") from None
        return Caller(tenant=str(claims.get("tenant") or settings.tenant), user_id=claims.get("sub"))
    raise AuthError("unknown_api_key")


def web_session_id(tenant: str, requested: str | None) -> str:
    prefix = f"web:{tenant}:"
    if not requested:
        return prefix + uuid.uuid4().hex
    if requested.startswith(prefix):
        requested = requested[len(prefix) :]
    if not SESSION_PART.match(requested):
        raise ValueError("session_id must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    return prefix + requested


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


def enabled(settings: Any) -> bool:
    return bool(settings.gateway_api_keys or secret(settings.gateway_jwt_secret))


async def post_message(gw: Gateway, request: Request, raw: bytes) -> Response:
    peer = request.client.host if request.client else None
    if not enabled(gw.settings):
        return error(404, "web channel disabled")
    try:
        caller = authenticate(gw, request)
    except AuthError as exc:
        gw.stats.refuse("web", exc.reason, exc.status, peer)
        return error(exc.status, "unauthorized")
    limited = gw.tenant_limited("web", caller.tenant, peer)
    if limited is not None:
        return limited
    try:
        data = parse_json(raw)
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        session_id = web_session_id(caller.tenant, data.get("session_id"))
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise ValueError("metadata must be an object of strings")
        client_id = data.get("message_id")
        if client_id is not None and (not isinstance(client_id, str) or not SESSION_PART.match(client_id)):
            raise ValueError("message_id must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        user_id = caller.user_id or data.get("user_id") or session_id
        if not isinstance(user_id, str) or len(user_id) > 256:
            raise ValueError("user_id must be a string of at most 256 characters")
    except ValueError as exc:
        gw.stats.refuse("web", "bad_request", 400, peer, str(exc))
        return error(400, str(exc))
    if len(text) > gw.settings.max_text_chars:
        gw.stats.refuse("web", "text_too_long", 413, peer, f"{len(text)} chars")
        return error(413, f"text longer than {gw.settings.max_text_chars} characters")
    # A client-chosen message_id makes the POST safely retryable: the same id is the same turn.
    message_id = message_id_for("web", session_id, client_id) if client_id else str(uuid.uuid4())
    req = ChatRequest(
        message_id=message_id,
        session_id=session_id,
        user_id=user_id,
        channel="web",
        text=text,
        sent_at=now_ms(),
        metadata={str(k)[:64]: str(v)[:512] for k, v in list(metadata.items())[:20]},
        tenant=caller.tenant,
    )
    await gw.publisher.request(req)
    gw.stats.incr("accepted.web")
    return JSONResponse(
        {
            "message_id": message_id,
            "session_id": session_id,
            "stream_token": gw.stream_token(session_id),
            "events_url": f"/v1/sessions/{session_id}/events",
        },
        status_code=202,
    )


async def session_events(gw: Gateway, request: Request, raw: bytes) -> Response:
    peer = request.client.host if request.client else None
    session_id = request.path_params["session_id"]
    token = request.query_params.get("token") or request.headers.get("x-stream-token")
    if not gw.stream_token_ok(session_id, token):
        try:
            caller = authenticate(gw, request)
        except AuthError as exc:
            gw.stats.refuse("web", f"sse_{exc.reason}", 401, peer)
            return error(401, "unauthorized")
        if not session_id.startswith(f"web:{caller.tenant}:"):
            gw.stats.refuse("web", "sse_other_tenant", 403, peer)
            return error(403, "forbidden")
    if gw.hub is None:
        return error(503, "reply stream disabled")
    gw.stats.incr("sse.connections")
    stream = gw.hub.subscribe(
        session_id, request.headers.get("last-event-id"), gw.settings.gateway_sse_keepalive_s
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
