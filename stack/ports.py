"""Is a port free, and if not, who holds it.

`stack up` refuses to start a service on a port someone else holds: silently talking to a foreign
Kafka or Redis would make every later failure mysterious. Naming the holder turns that refusal into
something the operator can act on.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Port:
    """One TCP port a service listens on, with the setting that moves it."""

    number: int
    purpose: str
    setting: str  # Settings field name, e.g. "kafka_port" -> CHATSTREAM_KAFKA_PORT

    @property
    def env_var(self) -> str:
        return f"CHATSTREAM_{self.setting.upper()}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel picks it), for test and dev servers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on ``host:port`` (or on the wildcard address for that port).

    A bind attempt is the honest test: SO_REUSEADDR lets it succeed over TIME_WAIT leftovers of a
    service we just stopped, while any live listener (ours or not) still makes it fail.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def accepts_connections(host: str, port: int, timeout: float = 0.5) -> bool:
    """A cheap first readiness signal: the listener exists (the real round trip comes after)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(inode)
    return inodes


def who_listens(port: int) -> str | None:
    """``"pid 123 (java)"`` for the process listening on ``port``, when /proc lets us see it."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    comm = (entry / "comm").read_text().strip()
                    return f"pid {entry.name} ({comm})"
        except OSError:
            continue  # gone, or not ours to inspect
    return "another user's process"
