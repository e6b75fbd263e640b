"""Microsoft Teams through the Bot Framework: ``POST /teams/messages``.

Each activity carries ``Authorization: Bearer <JWT>``; it must be signed by a configured key (RS256
keys from ``teams_jwks_path`` - a JWKS document or a PEM public key, e.g. a saved copy of the Bot
Framework's OpenID keys - or HS256 with ``teams_jwt_secret``), issued by ``teams_jwt_issuer``, for
audience ``teams_app_id``, and not expired. The ``serviceUrl`` claim, when present, must match the
activity's, and the serviceUrl must be on ``teams_service_url_allow``: deliver later sends the bot's
own token there, so an unchecked serviceUrl would hand that token to whoever wrote it.
"""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import Response

from connectors.gateway.context import Gateway, error
from connectors.gateway.publish import message_id_for
from processors.records import ChatRequest, now_ms
from streams.config import secret

log = logging.getLogger("chatstream.gateway.teams")

AT_MENTION = re.compile(r"<at>.*?</at>\s*", re.IGNORECASE | re.DOTALL)


class TeamsAuthError(Exception):
    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def enabled(settings: Any) -> bool:
    return bool(settings.teams_app_id and (secret(settings.teams_jwt_secret) or settings.teams_jwks_path))


@lru_cache(maxsize=8)
def _load_keys(path: str, mtime: float) -> dict[str | None, Any]:
    """kid -> public key from a JWKS file or a single PEM (kid None)."""
    text = Path(path).read_text()
    if text.lstrip().startswith("{"):
        doc = json.loads(text)
        keys: dict[str | None, Any] = {}
        for jwk in doc.get("keys", [doc]):
            keys[jwk.get("kid")] = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
        return keys
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return {None: load_pem_public_key(text.encode())}


def verify_token(settings: Any, authorization: str | None) -> dict[str, Any]:
    if not authorization or authorization[:7].lower() != "bearer ":
        raise TeamsAuthError("missing_token")
    token = authorization[7:].strip()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TeamsAuthError("malformed_token") from None
    alg = header.get("alg")
    hs_secret = secret(settings.teams_jwt_secret)
    if alg == "HS256" and hs_secret:
        key: Any = hs_secret
    elif alg == "RS256" and settings.teams_jwks_path:
        path = Path(settings.teams_jwks_path)
        keys = _load_keys(str(path), path.stat().st_mtime)
        key = keys.get(header.get("kid")) or (keys.get(None) if len(keys) == 1 else None)
        if key is None:
            raise TeamsAuthError("unknown_key")
    else:
        raise TeamsAuthError(f"algorithm_not_allowed:{alg}")
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=settings.teams_app_id,
            issuer=settings.teams_jwt_issuer,
            leeway=settings.teams_jwt_leeway_s,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise TeamsAuthError("expired") from None
    except jwt.InvalidAudienceError:
        raise TeamsAuthError("bad_audience") from None
    except jwt.InvalidIssuerError:
        raise TeamsAuthError("bad_issuer") from None
    except jwt.InvalidTokenError as exc:
        raise TeamsAuthError(f"invalid_token:{type(exc).__name__}") from None


def service_url_allowed(settings: Any, url: str) -> bool:
    return any(url.startswith(prefix) for prefix in settings.teams_service_url_allow)


def turn_from_activity(settings: Any, activity: dict[str, Any]) -> ChatRequest | None:
    if activity.get("type") != "message":
        return None
    conversation = activity.get("conversation") or {}
    sender = activity.get("from") or {}
    conv_id, activity_id = conversation.get("id"), activity.get("id")
    text = AT_MENTION.sub("", activity.get("text") or "").strip()
    if not (conv_id and activity_id and text and sender.get("id")):
        return None
    if sender.get("id") == (activity.get("recipient") or {}).get("id"):
        return None  # our own message echoed back
    tenant_id = conversation.get("tenantId") or ((activity.get("channelData") or {}).get("tenant") or {}).get("id") or ""
    return ChatRequest(
        message_id=message_id_for("teams", conv_id, activity_id),
        session_id=f"teams:{conv_id}",
        user_id=f"teams:{sender.get('aadObjectId') or sender['id']}",
        channel="teams",
        text=text,
        sent_at=now_ms(),
        metadata={
            "teams_service_url": activity.get("serviceUrl") or "",
            "teams_conversation_id": conv_id,
            "teams_activity_id": activity_id,
            "teams_user_id": sender["id"],
            "teams_bot_id": (activity.get("recipient") or {}).get("id") or "",
            "teams_tenant_id": tenant_id,
        },
        tenant=settings.tenant,
    )


async def messages(gw: Gateway, request: Request, raw: bytes) -> Response:
    peer = request.client.host if request.client else None
    if not enabled(gw.settings):
        return error(404, "teams channel disabled")
    try:
        claims = verify_token(gw.settings, request.headers.get("authorization"))
    except TeamsAuthError as exc:
        gw.stats.refuse("teams", exc.reason, exc.status, peer)
        return error(exc.status, "unauthorized")
    try:
        activity = json.loads(raw)
        if not isinstance(activity, dict):
            raise ValueError("not an object")
    except ValueError:
        gw.stats.refuse("teams", "bad_json", 400, peer)
        return error(400, "body is not a JSON object")
    service_url = activity.get("serviceUrl") or ""
    if claims.get("serviceurl", claims.get("serviceUrl")) not in (None, service_url):
        gw.stats.refuse("teams", "service_url_mismatch", 403, peer)
        return error(403, "serviceUrl does not match the token")
    req = turn_from_activity(gw.settings, activity)
    if req is None:
        gw.stats.incr("teams.ignored")
        return Response(status_code=200)
    if not service_url_allowed(gw.settings, service_url):
        gw.stats.refuse("teams", "service_url_not_allowed", 403, peer, service_url[:200])
        return error(403, "serviceUrl not allowed")
    if len(req.text) > gw.settings.max_text_chars:
        gw.stats.refuse("teams", "text_too_long", 413, peer, f"{len(req.text)} chars")
        return error(413, "text too long")
    limited = gw.tenant_limited("teams", req.metadata["teams_tenant_id"] or "-", peer)
    if limited is not None:
        return limited
    await gw.publisher.request(req)
    gw.stats.incr("accepted.teams")
    return Response(status_code=200)
