"""Bot Framework: reply to the activity at the conversation's ``serviceUrl``.

The serviceUrl comes from the inbound activity; it is checked against ``teams_service_url_allow``
again here (the gateway already did) because the bot's access token is sent to it.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx

from connectors.delivery.http import Permanent, citations_footer, post
from connectors.gateway.teams import service_url_allowed
from processors.records import ChatResponse
from streams.config import secret


class TeamsClient:
    channel = "teams"

    def __init__(self, settings: Any, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.app_id = settings.teams_app_id
        self.password = secret(settings.teams_app_password)
        if not self.app_id or not self.password:
            raise ValueError("CHATSTREAM_TEAMS_APP_ID and CHATSTREAM_TEAMS_APP_PASSWORD are needed to reply")
        self._token: str | None = None
        self._token_expires = 0.0

    async def token(self) -> str:
        """OAuth client-credentials token for the Bot Connector, cached until shortly before expiry."""
        if self._token and time.time() < self._token_expires - 120:
            return self._token
        response = await post(
            self.client,
            self.settings.teams_token_url,
            "bot framework token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.app_id,
                "client_secret": self.password,
                "scope": "https://api.botframework.com/.default",
            },
        )
        data = response.json()
        self._token = str(data["access_token"])
        self._token_expires = time.time() + float(data.get("expires_in", 3600))
        return self._token

    def payload(self, resp: ChatResponse) -> tuple[str, dict[str, Any]]:
        md = resp.metadata
        service_url = (md.get("teams_service_url") or "").rstrip("/")
        conv, activity = md.get("teams_conversation_id"), md.get("teams_activity_id")
        if not (service_url and conv and activity):
            raise Permanent("reply has no teams_service_url/teams_conversation_id/teams_activity_id in its metadata")
        if not service_url_allowed(self.settings, service_url + "/"):
            raise Permanent(f"serviceUrl {service_url[:200]} is not in teams_service_url_allow")
        text = resp.text + citations_footer(resp, lambda title, url: f"[{title}]({url})")
        body: dict[str, Any] = {
            "type": "message",
            "text": text,
            "textFormat": "markdown",
            "replyToId": activity,
            "conversation": {"id": conv},
        }
        if md.get("teams_bot_id"):
            body["from"] = {"id": md["teams_bot_id"]}
        url = f"{service_url}/v3/conversations/{quote(conv, safe='')}/activities/{quote(activity, safe='')}"
        return url, body

    async def send(self, resp: ChatResponse) -> dict[str, str]:
        url, body = self.payload(resp)
        headers = {"Authorization": f"Bearer {await self.token()}"}
        response = await post(self.client, url, "bot framework reply", json=body, headers=headers)
        try:
            return {"id": str(response.json().get("id", ""))}
        except ValueError:
            return {"id": ""}
