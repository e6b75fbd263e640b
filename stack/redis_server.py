"""Debian's redis-server on loopback with a generated password and append-only persistence (sessions survive a restart)."""

from __future__ import annotations

from pathlib import Path

from stack.ports import Port
from stack.secrets import REDIS_PASSWORD, ensure_secret
from stack.service import NotReady, Service, StackError, render
from stack.tools import REDIS, Tool, find


class Redis(Service):
    name = "redis"

    @property
    def title(self) -> str:
        return "Redis"

    @property
    def conf_file(self) -> Path:
        return self.config_dir / "redis.conf"

    def ports(self) -> list[Port]:
        return [Port(self.settings.redis_port, "listener", "redis_port")]

    def endpoints(self) -> dict[str, str]:
        return {"url": f"redis://{self.host}:{self.settings.redis_port}/0"}

    def tools(self) -> list[Tool]:
        return [REDIS]

    def taken_ports(self) -> list[str]:
        problems = super().taken_ports()
        if any("(redis-server)" in problem for problem in problems):
            problems.append(
                "If that is Debian's own redis-server service (apt-get starts one on install), stop and disable "
                "it: `sudo service redis-server stop && sudo update-rc.d redis-server disable` "
                "(with systemd: `sudo systemctl disable --now redis-server`)."
            )
        return problems

    def render_conf(self) -> str:
        return render(
            "redis.conf", host=self.host, port=self.settings.redis_port, dir=self.data_dir,
            password=ensure_secret(self.settings, REDIS_PASSWORD),
        )

    def prepare(self) -> None:
        self.conf_file.touch(mode=0o600)  # it holds the password
        self.conf_file.chmod(0o600)
        self.conf_file.write_text(self.render_conf())

    def command(self) -> list[str]:
        binary = find(REDIS, self.cache)
        if binary is None:
            raise StackError("redis-server is not installed; apt-get install -y redis-server")
        return [binary, str(self.conf_file)]

    def probe(self) -> None:
        import redis  # sync client: readiness runs in the CLI, outside any event loop

        client = redis.Redis(
            host=self.host, port=self.settings.redis_port, socket_timeout=2, socket_connect_timeout=1,
            password=self.settings.stack_secret(REDIS_PASSWORD),  # None: a stack started before passwords
        )
        try:
            if not client.ping():
                raise NotReady("PING not answered")
        except redis.exceptions.RedisError as exc:  # includes LOADING while the AOF is replayed
            raise NotReady(f"PING failed: {exc}") from exc
        finally:
            client.close()
