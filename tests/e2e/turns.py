"""Turns for tests: every call gets its own user unless told otherwise, so per-user rate limits
(kept in Redis across runs) never leak from one test into another."""

from __future__ import annotations

import uuid

from processors.records import ChatRequest
from streams import client


def new_request(text: str, session_id: str, **kw) -> ChatRequest:
    kw.setdefault("user_id", f"test-{uuid.uuid4().hex[:10]}")
    return client.new_request(text, session_id, **kw)
