"""Clients shared by the stages of one worker process, opened once."""

from __future__ import annotations

import redis.asyncio as aioredis

from processors.session import SessionStore, session_store_from_settings
from streams.config import Settings

_redis: dict[str, aioredis.Redis] = {}


def redis_client(settings: Settings) -> aioredis.Redis:
    url = settings.redis_connection_url
    client = _redis.get(url)
    if client is None:
        client = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=10)
        _redis[url] = client
    return client


def session_store(settings: Settings) -> SessionStore:
    return session_store_from_settings(redis_client(settings), settings)


async def close_all() -> None:
    for client in list(_redis.values()):
        await client.aclose()
    _redis.clear()
