"""Clients shared by the stages of one worker process, opened once."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from processors.session import SessionStore, delete_namespace_keys, session_store_from_settings
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


def delete_namespace_keys_now(settings: Settings) -> int:
    """The namespace's Redis keys deleted from synchronous code (the CLI), with a client of its own:
    the shared ones belong to the event loop that first used them."""

    async def run() -> int:
        client = aioredis.from_url(settings.redis_connection_url, socket_timeout=10, socket_connect_timeout=3)
        try:
            return await delete_namespace_keys(client, settings.topic_prefix)
        finally:
            await client.aclose()

    return asyncio.run(run())
