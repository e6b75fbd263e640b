"""The gateway ASGI app: every channel's webhook, the web API and the chat page.

``create_app(settings, producer=None)`` builds it; tests pass a fake producer (and a ``Hub`` with
``sse_tail=False``), ``chatstream gateway`` runs it under uvicorn with the real ``AsyncProducer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import resources
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from connectors.gateway import slack, teams, web, whatsapp
from connectors.gateway.context import Gateway
from connectors.gateway.publish import Publisher
from connectors.gateway.sse import Hub, OutboundTail
from connectors.gateway.stats import Stats
from streams.codec import make_codec
from streams.config import Settings, secret

log = logging.getLogger("chatstream.gateway")


def channel_status(settings: Settings) -> dict[str, str]:
    """Which channels are on; a channel without its secret stays off (its routes answer 404)."""
    out = {}
    out["web"] = (
        "enabled"
        if settings.gateway_api_keys or secret(settings.gateway_jwt_secret)
        else "disabled: set CHATSTREAM_GATEWAY_API_KEYS or CHATSTREAM_GATEWAY_JWT_SECRET"
    )
    out["slack"] = "enabled" if secret(settings.slack_signing_secret) else "disabled: CHATSTREAM_SLACK_SIGNING_SECRET unset"
    out["whatsapp"] = (
        "enabled"
        if whatsapp.enabled_settings(settings)
        else "disabled: CHATSTREAM_WHATSAPP_APP_SECRET and CHATSTREAM_WHATSAPP_VERIFY_TOKEN needed"
    )
    out["teams"] = (
        "enabled"
        if teams.enabled(settings)
        else "disabled: CHATSTREAM_TEAMS_APP_ID and CHATSTREAM_TEAMS_JWT_SECRET or CHATSTREAM_TEAMS_JWKS_PATH needed"
    )
    return out


def index_html() -> str:
    return resources.files("connectors").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(
    settings: Settings,
    producer: Any = None,
    *,
    hub: Hub | None = None,
    sse_tail: bool | None = None,
    redis: Any = None,
) -> Starlette:
    codec = make_codec(settings)
    stats = Stats()
    if hub is None and settings.gateway_sse_enabled:
        hub = Hub(settings.gateway_sse_buffer, settings.gateway_sse_buffer_ttl_s)
    run_tail = (hub is not None) if sse_tail is None else sse_tail
    own_producer = producer is None
    if own_producer:
        from streams.producer import AsyncProducer

        # A short delivery timeout: with Kafka down the channel hears 503 in seconds and retries.
        producer = AsyncProducer(
            settings.kafka_bootstrap,
            **{"message.timeout.ms": int(settings.gateway_publish_timeout_s * 1000)},
        )
    publisher = Publisher(producer, codec, settings)
    # wait_for is the outer bound; librdkafka's own timeout normally fires first.
    publisher.timeout_s = settings.gateway_publish_timeout_s + 1.0
    gw = Gateway(settings=settings, publisher=publisher, stats=stats, hub=hub, redis=redis)
    tail = OutboundTail(settings, codec, hub) if (run_tail and hub is not None) else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from streams.tracing import setup_tracing

        setup_tracing(settings, "chatstream-gateway")
        for channel, status in channel_status(settings).items():
            (log.info if status == "enabled" else log.warning)("channel %s: %s", channel, status)
        if secret(settings.gateway_stream_secret) is None:
            log.info("SSE stream tokens signed with a per-process key (set CHATSTREAM_GATEWAY_STREAM_SECRET for several instances)")
        if gw.redis is None and secret(settings.slack_signing_secret):
            import redis.asyncio as aioredis

            gw.redis = aioredis.from_url(settings.redis_connection_url)
        if tail is not None:
            tail.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            if tail is not None:
                await asyncio.to_thread(tail.stop)
            if own_producer:
                await producer.close(5)
            if redis is None and gw.redis is not None:
                await gw.redis.aclose()

    async def index(request: Request) -> Response:
        return HTMLResponse(index_html(), headers={"Cache-Control": "no-cache"})

    async def stats_view(request: Request) -> Response:
        body: dict[str, Any] = {"counters": stats.snapshot(), "channels": channel_status(settings)}
        if hub is not None:
            body["sse"] = {"subscribers": hub.subscribers(), "delivered": hub.delivered}
        return JSONResponse(body)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "sse_ready": bool(tail and tail.ready.is_set())})

    from connectors.feedback import web_feedback

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/stats", stats_view, methods=["GET"]),
        Route("/v1/messages", gw.guard("web", web.post_message), methods=["POST"]),
        Route("/v1/sessions/{session_id}/events", gw.guard("web", web.session_events, body=False), methods=["GET"]),
        Route("/v1/feedback", gw.guard("web", web_feedback), methods=["POST"]),
        Route("/slack/events", gw.guard("slack", slack.events), methods=["POST"]),
        Route("/whatsapp/webhook", gw.guard("whatsapp", whatsapp.verify_handshake, body=False), methods=["GET"]),
        Route("/whatsapp/webhook", gw.guard("whatsapp", whatsapp.webhook), methods=["POST"]),
        Route("/teams/messages", gw.guard("teams", teams.messages), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gw
    app.state.tail = tail
    return app
