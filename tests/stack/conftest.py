"""A stand-in server for testing the stack's machinery (pid files, readiness, rollback) without real services.

It is a real process started through the real code path; only what it runs is small: a Python loop
that writes a "ready" file when it is up, so readiness is a genuine answer from the child.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stack.ports import Port
from stack.service import NotReady, Service
from stack.tools import Tool
from streams.config import Settings

SERVER = """
import pathlib, signal, sys, time
ready, delay, mode = pathlib.Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("fake server starting", flush=True)
if mode == "crash":
    print("fake server: boom", flush=True)
    sys.exit(3)
time.sleep(delay)
if mode != "never-ready":
    ready.write_text("ok")
while True:
    time.sleep(0.2)
"""


class FakeService(Service):
    def __init__(self, settings: Settings, name: str, mode: str = "normal", delay: float = 0.2,
                 ports: list[int] = (), tools: list[Tool] = ()) -> None:
        super().__init__(settings)
        self.name = name
        self.mode = mode
        self.delay = delay
        self._ports = list(ports)
        self._tools = list(tools)

    @property
    def ready_file(self) -> Path:
        return self.data_dir / "ready"

    def ports(self) -> list[Port]:
        return [Port(p, "test listener", f"{self.name}_port") for p in self._ports]

    def endpoints(self) -> dict[str, str]:
        return {"fake": f"{self.name}://{self.host}"}

    def tools(self) -> list[Tool]:
        return self._tools

    def prepare(self) -> None:
        self.ready_file.unlink(missing_ok=True)

    def command(self) -> list[str]:
        return [sys.executable, "-c", SERVER, str(self.ready_file), str(self.delay), self.mode]

    def probe(self) -> None:
        if not self.ready_file.exists():
            raise NotReady("no ready file yet")


@pytest.fixture
def stack_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", cache_dir=tmp_path / "cache", stack_start_timeout_s=10.0,
                    stack_stop_timeout_s=5.0)


@pytest.fixture
def make_service(stack_settings: Settings) -> Callable[..., FakeService]:
    made: list[FakeService] = []

    def make(name: str = "fake", **kwargs) -> FakeService:
        service = FakeService(stack_settings, name, **kwargs)
        made.append(service)
        return service

    yield make
    for service in made:  # never leave a test's process behind, whatever the test did
        service.stop(timeout_s=1.0)
