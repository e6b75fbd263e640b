"""WhatsApp Cloud API ``/{phone_number_id}/messages``: a text reply quoting the user's message."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.delivery.http import Permanent, citations_footer, post
from processors.records import ChatResponse
from streams.config import secret

MAX_BODY = 4096  # WhatsApp's limit for a text message body


class WhatsAppClient:
    channel = "whatsapp"

    def __init__(self, settings: Any, client: httpx.AsyncClient) -> None:
        token = secret(settings.whatsapp_access_token)
        if not token:
            raise ValueError("CHATSTREAM_WHATSAPP_ACCESS_TOKEN is not set")
        self.base = settings.whatsapp_api_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.client = client

    def payload(self, resp: ChatResponse) -> tuple[str, dict[str, Any]]:
        md = resp.metadata
        phone_number_id, to = md.get("whatsapp_phone_number_id"), md.get("whatsapp_from")
        if not phone_number_id or not to or not phone_number_id.isdigit():
            raise Permanent("reply has no valid whatsapp_phone_number_id/whatsapp_from in its metadata")
        text = resp.text + citations_footer(resp, lambda title, url: f"{title} ({url})")
        if len(text) > MAX_BODY:
            text = text[: MAX_BODY - 1] + "\u2026"
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"body": text, "preview_url": False},
            # echoed in the status webhooks of this message: the only trace of a send whose answer was lost
            "biz_opaque_callback_data": resp.message_id,
        }
        if md.get("whatsapp_message_id"):
            body["context"] = {"message_id": md["whatsapp_message_id"]}
        return f"{self.base}/{phone_number_id}/messages", body

    async def send(self, resp: ChatResponse) -> dict[str, str]:
        url, body = self.payload(resp)
        response = await post(self.client, url, "whatsapp messages", json=body, headers=self.headers)
        ids = [m.get("id", "") for m in (response.json().get("messages") or [])]
        return {"id": ids[0] if ids else ""}
