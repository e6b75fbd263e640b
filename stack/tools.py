"""The machine's tools the stack needs (java, mvn, go, redis-server), and what to say when one is missing.

A missing tool must stop `stack up` before anything starts, with one message that names every
missing piece and how to get it, so the operator fixes the machine once instead of run by run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

COMPOSE_HINT = "or run the services in Docker instead: docker compose -f docker-compose.kafka.yml up -d"


@dataclass(frozen=True)
class Tool:
    name: str
    needed_for: str
    install: str


JAVA = Tool("java", "running Kafka", "apt-get install -y openjdk-17-jre-headless")
MAVEN = Tool("mvn", "fetching Kafka's jars from Maven Central", "apt-get install -y maven")
GO = Tool(
    "go",
    "building Weaviate and Jaeger (Go >= 1.21; it fetches the newer toolchain these need by itself)",
    ".ci/install-tools (puts Go from the Go module proxy under ~/.cache/chatstream/go)",
)
REDIS = Tool("redis-server", "running Redis", "apt-get install -y redis-server")


def find(tool: Tool, cache_dir: Path) -> str | None:
    """Path of ``tool``: PATH first; for Go, also /usr/local/go and where `.ci/install-tools` puts it."""
    found = shutil.which(tool.name)
    if tool is not GO:
        return found
    for candidate in (found, "/usr/local/go/bin/go", str(cache_dir / "go" / "bin" / "go")):
        if candidate and Path(candidate).is_file() and go_usable(candidate):
            return candidate
    return None


def go_usable(go: str) -> bool:
    """Go >= 1.21 fetches the newer toolchain a module's go.mod asks for by itself; older Go cannot."""
    try:
        out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    match = re.match(r"go(\d+)\.(\d+)", out.strip())
    return bool(match) and (int(match.group(1)), int(match.group(2))) >= (1, 21)


def java_major(java: str) -> int | None:
    """Major version of a ``java`` binary (``java -version`` prints e.g. ``openjdk version "17.0.15"``)."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" means Java 8


def missing_message(missing: list[Tool]) -> str:
    lines = ["the local stack needs tools this machine lacks:"]
    for tool in missing:
        lines.append(f"  - {tool.name} (for {tool.needed_for}): {tool.install}")
    lines.append(f"Install them (`make test` / .ci/run do it on Debian), {COMPOSE_HINT}")
    return "\n".join(lines)
