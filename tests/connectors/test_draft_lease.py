"""The draft lock is a lease its holder renews: held as long as the holder works, gone within a lease
once the holder is dead (a deliver killed mid-edit used to block the message's placeholder for 30 s)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from connectors.delivery.drafts import Drafts, draft_lock_key
from streams.config import Settings

pytestmark = pytest.mark.stack


async def test_a_working_holder_keeps_the_lock_past_its_lease() -> None:
    redis = aioredis.from_url(Settings().redis_connection_url)
    drafts = Drafts(redis, lock_ttl_s=10.0, lease_s=0.6)
    key = draft_lock_key(f"m-{uuid.uuid4().hex}")
    message_id = key.split(":", 1)[1]
    try:
        async with drafts._shared(message_id):
            await asyncio.sleep(1.5)  # two and a half leases: a slow channel call
            assert await redis.exists(key), "renewed while held"
            assert 0 < await redis.pttl(key) <= 600, "the key lives one lease at a time"
        assert not await redis.exists(key), "released at the end"
    finally:
        await redis.aclose()


async def test_a_dead_holders_lock_is_taken_over_within_a_lease() -> None:
    redis = aioredis.from_url(Settings().redis_connection_url)
    drafts = Drafts(redis, lock_ttl_s=10.0, lease_s=0.6)
    message_id = f"m-{uuid.uuid4().hex}"
    dead = redis.lock(draft_lock_key(message_id), timeout=0.6, thread_local=False)  # as a killed process left it
    assert await dead.acquire(blocking=False)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        async with drafts._shared(message_id):
            waited = loop.time() - began
        assert waited < 1.2, f"waited {waited:.2f} s for a dead holder's lock (lease 0.6 s)"
    finally:
        await redis.aclose()
