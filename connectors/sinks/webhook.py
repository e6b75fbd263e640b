"""POST a JSON document to the operator's endpoint until it answers 2xx, or give up after N tries.

Every request carries an ``Idempotency-Key`` so that a re-read record (after a crash or a
rebalance) cannot create a second ticket or transcript at an endpoint that honours it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Awaitable, Callable

import httpx

from connectors.delivery.http import DeliveryError, post
from streams.config import secret

log = logging.getLogger("chatstream.sinks")


class Webhook:
    def __init__(
        self,
        settings: Any,
        url: str,
        client: httpx.AsyncClient,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--to must be an http(s) URL, got {url!r}")
        self.settings = settings
        self.url = url
        self.client = client
        self.sleep = sleep
        token = secret(settings.sink_auth_token)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def send(self, payload: dict[str, Any], idempotency_key: str) -> httpx.Response:
        """2xx or raise the last ``DeliveryError`` after ``sink_max_attempts`` (permanent: at once)."""
        headers = {**self.headers, "Idempotency-Key": idempotency_key}
        attempt = 0
        while True:
            try:
                return await post(self.client, self.url, "webhook", json=payload, headers=headers)
            except DeliveryError as exc:
                attempt += 1
                if exc.permanent or attempt >= self.settings.sink_max_attempts:
                    raise
                if exc.retry_after is not None:
                    delay = min(exc.retry_after, self.settings.sink_backoff_max_s * 4)
                else:
                    cap = min(self.settings.sink_backoff_max_s, self.settings.sink_backoff_base_s * 2 ** (attempt - 1))
                    delay = random.uniform(cap / 2, cap)
                log.warning("webhook %s failed (attempt %d), retrying in %.1fs: %s", idempotency_key, attempt, delay, exc)
                await self.sleep(delay)
