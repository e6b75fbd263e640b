"""Secrets of the local stack, generated once into the state folder and read by every client.

`stack up` creates each one the first time a service needs it (random, 0600, never printed) and reuses
it afterwards, so data written under one key stays reachable after a restart. Clients find them with
``Settings.stack_secret`` (an explicit ``CHATSTREAM_*`` setting wins over the file), so one rule decides
which credential is used, and a stack started before the secrets existed keeps working anonymously.
"""

from __future__ import annotations

import os
import secrets

from streams.config import Settings

WEAVIATE_API_KEY = "weaviate_api_key"  # also a Settings field: the clients' key
REDIS_PASSWORD = "redis_password"  # also a Settings field
WEAVIATE_CLUSTER_PASSWORD = "weaviate_cluster_password"  # server side only: basic auth of the cluster data port


def ensure_secret(settings: Settings, name: str) -> str:
    """The configured value of ``name``, else the generated one (created on first use)."""
    existing = settings.stack_secret(name) if name in type(settings).model_fields else _read(settings, name)
    if existing:
        return existing
    path = settings.secret_path(name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another `up` won the race: use its value
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value


def _read(settings: Settings, name: str) -> str | None:
    try:
        return settings.secret_path(name).read_text().strip() or None
    except OSError:
        return None
