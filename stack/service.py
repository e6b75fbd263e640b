"""What every local service shares: pid file, detached start, log file, readiness round trip, stop by pid.

The rules that make `stack up`/`down` safe on a developer's machine live here once:
- a service is *ours* only if its pid file names a live process with the start time we recorded, so a
  recycled pid or a stranger's server is never signalled (and nothing is ever killed by name);
- processes start in their own session (process group), detached from the terminal, output appended
  to ``$CHATSTREAM_HOME/logs/NAME.log``;
- "ready" means a real request answered, polled until a deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, ClassVar

from stack.common import StackError, tail_file
from stack.ports import Port, port_in_use, who_listens
from stack.tools import COMPOSE_HINT, Tool
from streams.config import Settings

if TYPE_CHECKING:
    from stack.build import Build

TEMPLATES = Path(__file__).parent / "templates"
LOG_ROTATE_BYTES = 50 * 1024 * 1024


class NotReady(Exception):
    """A readiness probe's answer: not yet (the message says what failed)."""


def render(template: str, **values: object) -> str:
    """A config file from ``stack/templates/``; every ``$name`` must be given (no silent blanks)."""
    return Template((TEMPLATES / template).read_text()).substitute({k: str(v) for k, v in values.items()})


def process_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process; None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def spawn_detached(cmd: Sequence[str], *, cwd: Path, env: dict[str, str], log_file: Path) -> int:
    """Start ``cmd`` in a new session (its own process group, no controlling terminal), output to ``log_file``.

    posix_spawn rather than subprocess.Popen: the server must outlive this short-lived CLI process,
    and a Popen object would complain at exit about a child "still running". ``sh -c 'cd ...; exec'``
    sets the working directory (posix_spawn cannot) and then *becomes* the server, so the pid we
    record is the server's own.
    """
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_file), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    argv = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', str(cwd), *cmd]
    return os.posix_spawn("/bin/sh", argv, env, file_actions=file_actions, setsid=True)


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class Service(ABC):
    """One local server. Subclasses say how it is built, configured, started and asked if it is ready."""

    name: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.bind_host
        self.home = settings.home.expanduser().resolve()
        self.cache = settings.cache_dir.expanduser().resolve()
        self.start_timeout_s = settings.stack_start_timeout_s
        self.stop_timeout_s = settings.stack_stop_timeout_s

    # --- what a service declares ---------------------------------------------------------------
    @property
    def title(self) -> str:
        """Name and version for messages, e.g. "Kafka 3.9.1"."""
        return self.name

    @abstractmethod
    def ports(self) -> list[Port]:
        """Every port it listens on; all are checked before it starts."""

    @abstractmethod
    def endpoints(self) -> dict[str, str]:
        """What clients connect to, printed by `up` and `status`."""

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line (run with ``data_dir`` as working directory)."""

    @abstractmethod
    def probe(self) -> None:
        """One real round trip with a short timeout; raise :class:`NotReady` when it fails."""

    def probe_started(self) -> None:
        """What :meth:`wait_ready` asks after a start: by default :meth:`probe`. A service that is part of a
        group (a Kafka node) may also wait for the group to settle, which `status` must not require."""
        self.probe()

    def tools(self) -> list[Tool]:
        """Tools needed to *run* it (build tools belong to :meth:`build`)."""
        return []

    def build(self) -> Build | None:
        """What must be built (and cached) before it can start, if anything."""
        return None

    def prepare(self) -> None:
        """Write config files, format storage: whatever must exist before the process starts."""

    def environment(self) -> dict[str, str]:
        """Variables added to the inherited environment of the server process."""
        return {}

    # --- paths -----------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.home / self.name

    @property
    def config_dir(self) -> Path:
        return self.home / "config"

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    # --- process ---------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of *our* running server, or None. A stale pid file (dead or recycled pid) is removed."""
        try:
            pid_text, started_text = self.pid_file.read_text().splitlines()[0].split()
            pid, started = int(pid_text), int(started_text)
        except (OSError, ValueError, IndexError):
            return None
        _reap(pid)
        if process_start_time(pid) != started:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def _port_signature(self) -> str:
        return "ports " + " ".join(f"{self.host}:{p.number}" for p in self.ports())

    def settings_changed(self) -> bool:
        """True when our running server was started with other ports than the settings now say."""
        try:
            lines = self.pid_file.read_text().splitlines()
        except OSError:
            return False
        return len(lines) > 1 and lines[1] != self._port_signature()

    def taken_ports(self) -> list[str]:
        """Messages for ports held by someone else (call only when this service is not running)."""
        problems = []
        for port in self.ports():
            if port_in_use(self.host, port.number):
                holder = who_listens(port.number) or "a process this user cannot see"
                problems.append(
                    f"port {self.host}:{port.number} ({self.title} {port.purpose}) is taken by {holder}. "
                    f"Stop that process, or move this port with {port.env_var}=<free port>, "
                    f"{COMPOSE_HINT}"
                )
        return problems

    def start(self) -> int:
        """Start detached in a new session; the pid file records pid and start time."""
        for folder in (self.data_dir, self.config_dir, self.pid_file.parent, self.log_file.parent):
            folder.mkdir(parents=True, exist_ok=True)
        self.prepare()
        if self.log_file.exists() and self.log_file.stat().st_size > LOG_ROTATE_BYTES:
            self.log_file.replace(self.log_file.with_suffix(".log.1"))
        cmd = self.command()
        env = dict(os.environ)  # inherit PATH, locale, HOME; the service's own settings are explicit
        env.update(self.environment())
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} chatstream: {' '.join(cmd)}\n".encode())
        pid = spawn_detached(cmd, cwd=self.data_dir, env=env, log_file=self.log_file)
        try:
            started = process_start_time(pid)
            if started is None:
                raise StackError(
                    f"{self.title} exited at once; last lines of {self.log_file}:\n{tail_file(self.log_file)}"
                )
            tmp = self.pid_file.with_suffix(".tmp")
            tmp.write_text(f"{pid} {started}\n{self._port_signature()}\n")
            tmp.replace(self.pid_file)
        except BaseException:  # no pid file means nobody could ever stop it: do not leave it running
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            raise
        return pid

    def wait_ready(self, timeout_s: float | None = None) -> float:
        """Poll :meth:`probe_started` until it answers; fail early when the process dies. Returns seconds waited."""
        timeout_s = self.start_timeout_s if timeout_s is None else timeout_s
        began = time.monotonic()
        deadline = began + timeout_s
        delay = 0.1
        last = "no answer yet"
        while True:
            if not self.is_running():
                raise StackError(
                    f"{self.title} exited while starting; last lines of {self.log_file}:\n{tail_file(self.log_file)}"
                )
            try:
                self.probe_started()
                return time.monotonic() - began
            except NotReady as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise StackError(
                    f"{self.title} did not become ready within {timeout_s:.0f}s ({last}); "
                    f"last lines of {self.log_file}:\n{tail_file(self.log_file)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def signal(self, sig: int) -> int | None:
        """Send ``sig`` to our server's process group (and only ours); returns the pid signalled."""
        pid = self.pid()
        if pid is None:
            return None
        try:
            if os.getpgid(pid) == pid:  # started by us with start_new_session: the group is ours alone
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass
        return pid

    def stop(self, timeout_s: float | None = None) -> bool:
        """SIGTERM, wait, SIGKILL after the deadline; data stays. False when it was not running."""
        pid = self.request_stop()
        if pid is None:
            return False
        self.finish_stop(pid, timeout_s)
        return True

    def request_stop(self) -> int | None:
        """First half of :meth:`stop` (SIGTERM), so several services can shut down at the same time."""
        return self.signal(signal.SIGTERM)

    def finish_stop(self, pid: int, timeout_s: float | None = None) -> None:
        """Second half of :meth:`stop`: wait for the exit, SIGKILL after ``timeout_s``."""
        timeout_s = self.stop_timeout_s if timeout_s is None else timeout_s
        if not self._wait_gone(timeout_s):
            self.signal(signal.SIGKILL)
            if not self._wait_gone(10.0):
                raise StackError(f"{self.title} (pid {pid}) survived SIGKILL; check `ps -p {pid}`")
        self.pid_file.unlink(missing_ok=True)

    def _wait_gone(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.is_running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def ready(self) -> bool:
        try:
            self.probe()
        except NotReady:
            return False
        return True

    def describe_endpoints(self) -> str:
        return "  ".join(f"{key} {value}" for key, value in self.endpoints().items())


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise StackError(f"{what} is missing at {path}; `chatstream stack up` builds it")
    return path

