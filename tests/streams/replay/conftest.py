"""Replays against the real local stack: a source namespace with traffic, the sample help center."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.config import Settings
from streams.dev.worker_process import settings_env

KB = Path(__file__).resolve().parents[3] / "streams" / "demo" / "knowledge_base"


@pytest.fixture(scope="session")
def knowledge_base() -> str:
    """The sample help center ingested once (idempotent: re-ingest changes nothing)."""
    settings = Settings()
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "ingest", str(KB), "--tenant", settings.tenant],
        env=settings_env(settings), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return settings.tenant


def stack_credentials() -> dict[str, str]:
    """The running stack's credentials as explicit settings: another CHATSTREAM_HOME has no secrets folder."""
    settings = Settings()
    found = {name: settings.stack_secret(name) for name in ("redis_password", "weaviate_api_key")}
    return {f"CHATSTREAM_{name.upper()}": value for name, value in found.items() if value}


def chatstream(*args: str, home: Path, timeout: float = 600, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the CLI as an operator would, with its own CHATSTREAM_HOME (replay journals live there)."""
    full_env = {**os.environ, "CHATSTREAM_HOME": str(home), "CHATSTREAM_OTLP_ENDPOINT": "", **stack_credentials(), **(env or {})}
    result = subprocess.run([sys.executable, "-m", "streams.cli", *args], env=full_env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"chatstream {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result
