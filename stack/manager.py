"""`stack up / down / status` over all services, in dependency order, all-or-nothing.

`up` is idempotent and leaves nothing half-started: it checks every tool and port before starting
anything, builds what is missing, starts what is not running, waits for each service's readiness round
trip, and if any of that fails it stops what *this* run started (services that were already running
are left alone). `down` stops in reverse order and keeps the data.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from stack.build import run_build
from stack.jaeger import Jaeger
from stack.kafka import Kafka, kafka_nodes
from stack.ports import port_in_use, who_listens
from stack.redis_server import Redis
from stack.service import Service, StackError
from stack.tools import Tool, find, missing_message
from stack.weaviate import Weaviate
from streams.config import Settings

# Dependency order: `up` starts in this order, `down` stops in reverse. Nothing here depends on another
# service yet; Kafka comes first because every chatstream process needs it before anything else.
SERVICE_TYPES: tuple[type[Service], ...] = (Kafka, Redis, Weaviate, Jaeger)
SERVICE_NAMES = tuple(cls.name for cls in SERVICE_TYPES)


def default_services(settings: Settings) -> list[Service]:
    """Every service of the stack in dependency order; Kafka as ``kafka_brokers`` nodes."""
    return [*kafka_nodes(settings), *(cls(settings) for cls in SERVICE_TYPES if cls is not Kafka)]


@dataclass(frozen=True)
class ServiceStatus:
    service: Service
    state: str  # "up", "starting" (alive, no answer yet), "moved" (alive on other ports), "down"
    pid: int | None
    detail: str = ""


class Stack:
    def __init__(
        self,
        settings: Settings,
        out: Callable[[str], None] = print,
        services: Sequence[Service] | None = None,
    ) -> None:
        self.settings = settings
        self.out = out
        self.services = list(services) if services is not None else default_services(settings)

    def select(self, names: Iterable[str] = ()) -> list[Service]:
        """The named services in dependency order; all of them when no name is given."""
        wanted = list(names)
        known = {service.name for service in self.services}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise StackError(f"unknown service {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
        return [s for s in self.services if not wanted or s.name in wanted]

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One `up`/`down` at a time per state folder: two racing `up`s would overwrite each other's pid files."""
        lock_path = self.settings.home.expanduser().resolve() / "run" / "stack.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.out("  another `chatstream stack` command is running here; waiting for it")
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # --- up ------------------------------------------------------------------------------------------
    def up(self, names: Iterable[str] = ()) -> list[Service]:
        with self._exclusive():
            return self._up(names)

    def _up(self, names: Iterable[str]) -> list[Service]:
        began = time.monotonic()
        selected = self.select(names)
        already = {s.name: pid for s in selected if (pid := s.pid()) is not None}
        moved = [s for s in selected if s.name in already and s.settings_changed()]
        if moved:
            raise StackError(
                "running with other ports than the settings now give: "
                + ", ".join(f"{s.name} (pid {already[s.name]})" for s in moved)
                + f"; stop it first: chatstream stack down {' '.join(s.name for s in moved)}"
            )
        to_start = [s for s in selected if s.name not in already]

        builds = [b for s in to_start if (b := s.build()) is not None and not b.done()]
        tool_paths = self._find_tools([t for s in to_start for t in s.tools()] + [t for b in builds for t in b.tools])
        self._check_ports(to_start)  # before minutes of building, not after
        if builds:
            self.out(f"building what is missing (cached in {self.settings.cache_dir}; only the first time):")
            for build in builds:
                run_build(build, self.settings.cache_dir.expanduser().resolve(), tool_paths, self.out)
            self._check_ports(to_start)  # something may have taken a port meanwhile

        started: list[Service] = []
        try:
            for service in selected:
                if service.name in already:
                    self.out(f"  {service.title}: already running (pid {already[service.name]})")
                    continue
                pid = service.start()
                started.append(service)
                self.out(f"  {service.title}: started (pid {pid}), log {service.log_file}")
            for service in selected:
                waited = service.wait_ready()
                self.out(f"  {service.title}: ready after {waited:.1f}s")
        except BaseException:  # including Ctrl-C: never leave a half-started stack behind
            if started:
                self.out(f"stopping what this `up` started: {', '.join(s.name for s in started)}")
                self._stop(list(reversed(started)), quiet=True)
            raise
        self.out(f"stack up in {time.monotonic() - began:.1f}s")
        for service in selected:
            self.out(f"  {service.name:<9} {service.describe_endpoints()}")
        return started

    @staticmethod
    def _check_ports(services: list[Service]) -> None:
        problems = [problem for s in services for problem in s.taken_ports()]
        if problems:
            raise StackError("\n".join(problems))

    def _find_tools(self, tools: list[Tool]) -> dict[str, str]:
        paths: dict[str, str] = {}
        missing: list[Tool] = []
        for tool in tools:
            if tool.name in paths or tool in missing:
                continue
            path = find(tool, self.settings.cache_dir.expanduser())
            if path is None:
                missing.append(tool)
            else:
                paths[tool.name] = path
        if missing:
            raise StackError(missing_message(missing))
        return paths

    # --- down ----------------------------------------------------------------------------------------
    def down(self, names: Iterable[str] = ()) -> list[Service]:
        """Stop our processes (pid files only), newest dependency first; data is kept."""
        selected = list(reversed(self.select(names)))
        with self._exclusive():
            return self._stop(selected)

    def _stop(self, services: list[Service], quiet: bool = False) -> list[Service]:
        signalled = [(s, pid) for s in services if (pid := s.request_stop()) is not None]
        errors = []
        for service, pid in signalled:  # all got SIGTERM at once; now wait for each
            try:
                service.finish_stop(pid)
                self.out(f"  {service.title}: stopped (pid {pid})")
            except StackError as exc:
                errors.append(str(exc))
        if not quiet:
            stopped = {s.name for s, _ in signalled}
            for service in services:
                if service.name not in stopped:
                    self.out(f"  {service.title}: not running")
        if errors:
            raise StackError("\n".join(errors))
        return [s for s, _ in signalled]

    # --- status --------------------------------------------------------------------------------------
    def status(self, names: Iterable[str] = ()) -> list[ServiceStatus]:
        rows = []
        for service in self.select(names):
            pid = service.pid()
            if pid is not None and service.settings_changed():
                detail = f"started with other ports than the settings now give; chatstream stack down {service.name}"
                rows.append(ServiceStatus(service, "moved", pid, detail))
                continue
            if pid is not None:
                rows.append(ServiceStatus(service, "up" if service.ready() else "starting", pid))
                continue
            held = [p for p in service.ports() if port_in_use(service.host, p.number)]
            detail = ""
            if held:
                holder = who_listens(held[0].number) or "another process"
                detail = f"port {held[0].number} is held by {holder}, not by this stack"
            rows.append(ServiceStatus(service, "down", None, detail))
        return rows
