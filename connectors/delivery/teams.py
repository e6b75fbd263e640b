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
from processors.records import ChatDelta, ChatResponse
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

    def payload(self, resp: ChatResponse | ChatDelta, text: str | None = None) -> tuple[str, dict[str, Any]]:
        md = resp.metadata
        service_url = (md.get("teams_service_url") or "").rstrip("/")
        conv, activity = md.get("teams_conversation_id"), md.get("teams_activity_id")
        if not (service_url and conv and activity):
            raise Permanent("reply has no teams_service_url/teams_conversation_id/teams_activity_id in its metadata")
        if not service_url_allowed(self.settings, service_url + "/"):
            raise Permanent(f"serviceUrl {service_url[:200]} is not in teams_service_url_allow")
        if text is None:
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
        return await self._reply(url, body)

    async def _reply(self, url: str, body: dict[str, Any], method: str = "POST") -> dict[str, str]:
        headers = {"Authorization": f"Bearer {await self.token()}"}
        what = "bot framework reply" if method == "POST" else "bot framework update"
        response = await post(self.client, url, what, json=body, headers=headers, method=method)
        try:
            return {"id": str(response.json().get("id", ""))}
        except ValueError:
            return {"id": ""}

    # --- a provisional answer, edited in place (connectors.delivery.drafts) ----------------------
    # The Bot Connector updates a sent activity with PUT /v3/conversations/{id}/activities/{activityId}.

    async def post_draft(self, delta: ChatDelta, text: str) -> dict[str, str]:
        url, body = self.payload(delta, text)
        result = await self._reply(url, body)
        if not result["id"]:
            raise Permanent("bot framework reply returned no activity id: the draft cannot be updated")
        return {"id": result["id"], "url": url.rsplit("/", 1)[0] + "/" + quote(result["id"], safe="")}

    async def update_draft(self, handle: dict[str, str], delta: ChatDelta, text: str) -> None:
        _, body = self.payload(delta, text)
        await self._reply(handle["url"], {**body, "id": handle["id"]}, method="PUT")

    async def finish_draft(self, handle: dict[str, str], resp: ChatResponse) -> dict[str, str]:
        _, body = self.payload(resp)
        await self._reply(handle["url"], {**body, "id": handle["id"]}, method="PUT")
        return {"id": handle["id"]}
