"""Redis keeps session data across a restart of the service (append-only file)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import redis

from stack.redis_server import Redis
from streams.config import Settings


def chatstream(*args: str) -> subprocess.CompletedProcess:
    """The real CLI in a child process, with this process's environment (same CHATSTREAM_* settings)."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, timeout=180
    )


@pytest.mark.stack
def test_data_survives_stack_down_and_up(settings: Settings) -> None:
    service = Redis(settings)
    if not service.is_running():
        pytest.fail(
            f"this test restarts Redis, so it needs the one `chatstream stack up` started (pid file "
            f"{service.pid_file}); a Redis from elsewhere (docker compose) cannot be restarted here",
            pytrace=False,
        )
    client = redis.Redis(host=settings.bind_host, port=settings.redis_port, socket_timeout=5,
                         password=settings.stack_secret("redis_password"))
    key = f"stack-test:{uuid.uuid4().hex}"
    client.set(key, "kept across restarts", ex=3600)
    client.hset(f"{key}:h", mapping={"turns": 3})
    old_pid = service.pid()

    down = chatstream("stack", "down", "redis")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not service.is_running()
    with pytest.raises(redis.ConnectionError):
        client.ping()

    up = chatstream("stack", "up", "redis")
    assert up.returncode == 0, up.stdout + up.stderr
    assert service.pid() not in (None, old_pid)
    assert client.get(key) == b"kept across restarts"
    assert client.hget(f"{key}:h", "turns") == b"3"
    assert 0 < client.ttl(key) <= 3600
    client.delete(key, f"{key}:h")
    client.close()


def test_conf_binds_loopback_with_aof(tmp_path) -> None:
    settings = Settings(home=tmp_path, redis_port=16379)
    lines = Redis(settings).render_conf().splitlines()
    assert "bind 127.0.0.1" in lines
    assert "port 16379" in lines
    assert "appendonly yes" in lines
    assert "daemonize no" in lines
    assert f"dir {tmp_path.resolve() / 'redis'}" in lines
