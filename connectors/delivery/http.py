"""What a channel API's answer means for a delivery: done, retry later, or never."""

from __future__ import annotations

import email.utils
import time

import httpx


class DeliveryError(Exception):
    permanent = False

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Transient(DeliveryError):
    """Worth retrying: 429, 5xx, timeouts, connection errors."""


class Permanent(DeliveryError):
    """A retry cannot fix it (bad address, revoked token, missing metadata): dead-letter it."""

    permanent = True


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def check(response: httpx.Response, what: str) -> None:
    """Raise the right error for a non-2xx answer."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = f"{what}: HTTP {status} {response.text[:300]}"
    if status == 429 or status == 408 or status >= 500:
        raise Transient(detail, retry_after(response))
    raise Permanent(detail)


async def post(client: httpx.AsyncClient, url: str, what: str, *, method: str = "POST", **kwargs) -> httpx.Response:
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TransportError as exc:  # connect/read timeouts, refused, reset
        raise Transient(f"{what}: {type(exc).__name__}: {exc}") from exc
    check(response, what)
    return response


def citations_footer(resp, link) -> str:
    """A short 'Sources' line; ``link(title, url)`` renders a link in the channel's markup."""
    parts = []
    for c in resp.citations[:5]:
        title = c.title or c.doc_id
        parts.append(link(title, c.source) if c.source.startswith(("http://", "https://")) else title)
    return ("\n\nSources: " + "; ".join(parts)) if parts else ""
