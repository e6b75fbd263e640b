"""Cached builds of the services' programs (Kafka's jars, Weaviate's and Jaeger's binaries).

Builds take minutes on a cold machine, so they live in ``cache_dir`` (outside the repo, shared by every
checkout) and are done once. A build fills a staging folder that is renamed into place only when it
succeeded, so an interrupted build never looks finished; a lock file makes a second `stack up` wait for
a running build instead of starting another one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stack.common import StackError, tail_file
from stack.tools import COMPOSE_HINT, Tool


@dataclass
class Build:
    """How to produce one cached artefact; ``marker`` is the file whose presence means it is done."""

    name: str
    title: str
    expected: str  # how long it takes cold, told to the operator before starting
    target_dir: Path
    marker: Path
    tools: tuple[Tool, ...]
    steps: Callable[[Builder, Path], None]  # fills the staging folder it is given
    hint: str = field(default=COMPOSE_HINT)

    def done(self) -> bool:
        return self.marker.is_file()


class Builder:
    """Runs a build's commands with their output appended to the build log."""

    def __init__(self, build: Build, log_path: Path, tool_paths: dict[str, str], out: Callable[[str], None]):
        self.build = build
        self.log_path = log_path
        self.tool_paths = tool_paths
        self.out = out

    def tool(self, tool: Tool) -> str:
        return self.tool_paths[tool.name]

    def env(self, **extra: str) -> dict[str, str]:
        """The caller's environment (PATH, proxies, HOME for tool caches) plus this step's variables."""
        env = dict(os.environ)
        bin_dirs = {str(Path(path).parent) for path in self.tool_paths.values()}
        env["PATH"] = os.pathsep.join([*sorted(bin_dirs), env.get("PATH", "")])
        env.update(extra)
        return env

    def run(self, cmd: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
        """Run ``cmd``; stdout is returned and logged, stderr logged; failure raises with the log's tail."""
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n$ {' '.join(cmd)}" + (f"   (in {cwd})" if cwd else "") + "\n")
            log.flush()
            proc = subprocess.run(
                list(cmd), cwd=cwd, env=env or self.env(), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=log, text=True,
            )
            log.write(proc.stdout)
            log.write(f"rc={proc.returncode}\n")
        if proc.returncode != 0:
            raise StackError(
                f"building {self.build.title} failed: `{' '.join(cmd)}` exited with {proc.returncode}.\n"
                f"Last lines of {self.log_path}:\n{tail_file(self.log_path, 15)}\n"
                "A network failure (no access to Maven Central / the Go module proxy) shows up here; "
                f"retry when it is back, {self.build.hint}"
            )
        return proc.stdout


def run_build(build: Build, cache_dir: Path, tool_paths: dict[str, str], out: Callable[[str], None]) -> None:
    """Produce ``build`` unless it is already cached (or being produced by another `stack up`)."""
    if build.done():
        return
    (cache_dir / "locks").mkdir(parents=True, exist_ok=True)
    (cache_dir / "logs").mkdir(parents=True, exist_ok=True)
    log_path = cache_dir / "logs" / f"{build.name}-build.log"
    with open(cache_dir / "locks" / f"{build.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            out(f"  another `stack up` is building {build.title}; waiting for it (log: {log_path})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if build.done():
            return
        out(f"  building {build.title}: {build.expected}; log: {log_path}")
        started = time.monotonic()
        staging = build.target_dir.with_name(build.target_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} building {build.title}\n")
        build.steps(Builder(build, log_path, tool_paths, out), staging)
        if build.target_dir.exists():  # an older, incomplete attempt (no marker): replace it whole
            shutil.rmtree(build.target_dir)
        staging.rename(build.target_dir)
        if not build.done():
            raise StackError(f"building {build.title} finished but {build.marker} is missing; see {log_path}")
        elapsed = time.monotonic() - started
        out(f"  built {build.title} in {int(elapsed // 60)}m{int(elapsed % 60):02d}s")
