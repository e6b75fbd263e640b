"""WhatsApp Cloud API webhook: ``GET /whatsapp/webhook`` (verify handshake) and ``POST`` (events).

POSTs are signed by Meta with ``X-Hub-Signature-256: sha256=HMAC-SHA256(app secret, raw body)``.
Text messages become turns; status callbacks (sent, delivered, read, failed) are acknowledged and
counted, never turned into turns. Meta retries a webhook for days, so there is no replay window on
the signature; the message id is derived from the WhatsApp message id (``wamid``) instead, making a
redelivered message the same turn, and messages older than ``whatsapp_max_age_s`` are dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from connectors.gateway.context import Gateway, error
from connectors.gateway.publish import message_id_for
from processors.records import ChatRequest, now_ms
from streams.config import secret

log = logging.getLogger("chatstream.gateway.whatsapp")


def sign(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(app_secret: str, header: str | None, body: bytes) -> bool:
    return bool(header) and hmac.compare_digest(sign(app_secret, body), header or "")


def enabled_settings(settings: Any) -> bool:
    return bool(secret(settings.whatsapp_app_secret) and secret(settings.whatsapp_verify_token))


def enabled(gw: Gateway) -> bool:
    return enabled_settings(gw.settings)


async def verify_handshake(gw: Gateway, request: Request, raw: bytes) -> Response:
    peer = request.client.host if request.client else None
    if not enabled(gw):
        return error(404, "whatsapp channel disabled")
    q = request.query_params
    token = secret(gw.settings.whatsapp_verify_token) or ""
    if q.get("hub.mode") == "subscribe" and hmac.compare_digest(q.get("hub.verify_token", ""), token):
        return PlainTextResponse(q.get("hub.challenge", ""))
    gw.stats.refuse("whatsapp", "bad_verify_token", 403, peer)
    return error(403, "verification failed")


def turns_and_statuses(gw: Gateway, payload: dict[str, Any]) -> tuple[list[ChatRequest], int, int]:
    """(text turns, status callbacks, ignored messages) of one webhook delivery."""
    turns: list[ChatRequest] = []
    statuses = ignored = 0
    oldest = time.time() - gw.settings.whatsapp_max_age_s
    for entry in payload.get("entry") or []:
        for change in entry.get("changes") or []:
            value = change.get("value") or {}
            if change.get("field", "messages") != "messages":
                continue
            statuses += len(value.get("statuses") or [])
            phone_number_id = str((value.get("metadata") or {}).get("phone_number_id") or "")
            names = {c.get("wa_id"): (c.get("profile") or {}).get("name", "") for c in value.get("contacts") or []}
            for msg in value.get("messages") or []:
                sender, wamid = str(msg.get("from") or ""), str(msg.get("id") or "")
                body = (msg.get("text") or {}).get("body") if msg.get("type") == "text" else None
                try:
                    sent = int(msg.get("timestamp") or 0)
                except (TypeError, ValueError):
                    sent = 0
                if not (body and body.strip() and sender and wamid and phone_number_id) or (sent and sent < oldest):
                    ignored += 1  # media, reactions, stale redeliveries: not a text turn
                    continue
                turns.append(
                    ChatRequest(
                        message_id=message_id_for("whatsapp", wamid),
                        session_id=f"whatsapp:{phone_number_id}:{sender}",
                        user_id=f"whatsapp:{sender}",
                        channel="whatsapp",
                        text=body.strip(),
                        sent_at=sent * 1000 if sent else now_ms(),
                        metadata={
                            "whatsapp_phone_number_id": phone_number_id,
                            "whatsapp_from": sender,
                            "whatsapp_message_id": wamid,
                            "whatsapp_profile_name": names.get(sender, "")[:128],
                        },
                        tenant=gw.settings.tenant,
                    )
                )
    return turns, statuses, ignored


async def webhook(gw: Gateway, request: Request, raw: bytes) -> Response:
    peer = request.client.host if request.client else None
    app_secret = secret(gw.settings.whatsapp_app_secret)
    if not app_secret or not enabled(gw):
        return error(404, "whatsapp channel disabled")
    if not signature_ok(app_secret, request.headers.get("x-hub-signature-256"), raw):
        reason = "missing_signature" if not request.headers.get("x-hub-signature-256") else "bad_signature"
        gw.stats.refuse("whatsapp", reason, 401, peer)
        return error(401, "invalid signature")
    try:
        payload = json.loads(raw)
        if not isinstance(payload, dict):
            raise ValueError("not an object")
    except ValueError:
        gw.stats.refuse("whatsapp", "bad_json", 400, peer)
        return error(400, "body is not a JSON object")
    turns, statuses, ignored = turns_and_statuses(gw, payload)
    gw.stats.incr("whatsapp.statuses", statuses)
    gw.stats.incr("whatsapp.ignored", ignored)
    for req in turns:
        if len(req.text) > gw.settings.max_text_chars:
            gw.stats.refuse("whatsapp", "text_too_long", 200, peer, f"{len(req.text)} chars")
            continue
        limited = gw.tenant_limited("whatsapp", req.metadata["whatsapp_phone_number_id"], peer)
        if limited is not None:
            return limited  # Meta retries the whole delivery; ids already sent are repeats downstream
        await gw.publisher.request(req)  # Unavailable -> 503, Meta retries
        gw.stats.incr("accepted.whatsapp")
    return Response(status_code=200)
