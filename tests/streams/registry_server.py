"""A real Confluent-compatible schema registry for tests: Apicurio Registry, run from Maven Central.

Apicurio Registry publishes its whole Quarkus application on Maven Central as
``io.apicurio:apicurio-registry-app:<v>:tar.gz:all`` (an uber-jar plus ``lib/``), and serves the
Confluent Schema Registry API at ``/apis/ccompat/v7``. 3.0.x is the newest line that runs on the
machine's Java 17 (3.3.x is compiled for Java 21). Its default storage is an in-memory H2 database,
so every start is a clean registry and nothing is written to disk.

The download (about 110 MB, seconds on a warm network) is cached under the project's ``cache_dir``
(``~/.cache/chatstream``) by ``stack.build.run_build``: staged, renamed into place only when complete,
with a lock so two test runs never fetch it twice. ``dependency:get`` with ``-Dtransitive=false`` is
used on purpose: the 3.0.9 parent POM is not on Maven Central, so goals that read the artifact's
descriptor (``dependency:copy``) fail, while fetching the one file works.
"""

from __future__ import annotations

import subprocess
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from stack.build import Build, Builder, run_build
from stack.ports import free_port
from stack.service import StackError, tail_file
from stack.tools import JAVA, MAVEN, find, java_major

APICURIO_VERSION = "3.0.9"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
RUNNER = f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
CCOMPAT_PATH = "/apis/ccompat/v7"
MIN_JAVA = 17
# The registry is tiny here; a small heap and the C1 compiler start it in ~2.5 s instead of ~4.5 s.
JVM_FLAGS = ("-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError")


def install_dir(cache_dir: Path) -> Path:
    return cache_dir / f"apicurio-registry-{APICURIO_VERSION}"


def ensure_installed(cache_dir: Path, out=print) -> Path:
    """The unpacked registry (fetched from Maven Central the first time); raises StackError on failure."""
    mvn = find(MAVEN, cache_dir)
    if mvn is None:
        raise StackError(f"mvn is not installed (needed to fetch {ARTIFACT} from Maven Central): {MAVEN.install}")
    target = install_dir(cache_dir)

    def steps(builder: Builder, staging: Path) -> None:
        archive = staging / "apicurio.tar.gz"
        builder.run([
            builder.tool(MAVEN), "-B", "-q", "-C",  # -C: a corrupt download fails instead of warning
            "org.apache.maven.plugins:maven-dependency-plugin:2.8:get",
            f"-Dartifact={ARTIFACT}", "-Dtransitive=false", f"-Ddest={archive}",
        ])
        with tarfile.open(archive) as tar:
            try:
                tar.extractall(staging, filter="data")
            except TypeError:  # Python < 3.11.4 has no extraction filters
                tar.extractall(staging)
        archive.unlink()

    build = Build(
        name=f"apicurio-registry-{APICURIO_VERSION}",
        title=f"Apicurio Registry {APICURIO_VERSION} (mvn dependency:get {ARTIFACT})",
        expected="seconds to a minute with a cold ~/.m2 (about 110 MB)",
        target_dir=target,
        marker=target / RUNNER,
        tools=(MAVEN,),
        steps=steps,
        hint="then run the tests again.",
    )
    run_build(build, cache_dir, {MAVEN.name: mvn}, out)
    return target




def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@dataclass
class RegistryServer:
    """One running registry on a loopback port; ``stop()`` ends it (and only it)."""

    process: subprocess.Popen
    port: int
    log_path: Path
    started_s: float = field(default=0.0)

    @property
    def url(self) -> str:
        """The base URL a Confluent client is given (``SchemaRegistryClient({"url": ...})``)."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)


def start(home: Path, log_dir: Path, ready_timeout_s: float = 60.0) -> RegistryServer:
    """Start the registry from ``home`` on a free 127.0.0.1 port; returns once its Confluent API answers."""
    java = find(JAVA, home)
    if java is None:
        raise StackError(f"java is not installed (Apicurio Registry needs Java {MIN_JAVA}+): {JAVA.install}")
    major = java_major(java)
    if major is not None and major < MIN_JAVA:
        raise StackError(f"Apicurio Registry {APICURIO_VERSION} needs Java {MIN_JAVA}+ but {java} is Java {major}")
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"apicurio-registry-{port}.log"
    cmd = [
        java, *JVM_FLAGS,
        "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={port}",
        "-Dquarkus.management.enabled=false",  # else a second listener on 0.0.0.0:9000
        "-jar", str(home / RUNNER),
    ]
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(cmd, cwd=home, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    server = RegistryServer(process, port, log_path)
    probe = f"http://127.0.0.1:{port}{CCOMPAT_PATH}/subjects"
    deadline = started + ready_timeout_s
    while not _answers(probe):
        if process.poll() is not None:
            raise StackError(
                f"Apicurio Registry exited with {process.returncode} while starting; "
                f"last lines of {log_path}:\n{tail_file(log_path, 20)}"
            )
        if time.monotonic() > deadline:
            server.stop()
            raise StackError(
                f"Apicurio Registry did not answer {probe} within {ready_timeout_s:.0f} s; "
                f"last lines of {log_path}:\n{tail_file(log_path, 20)}"
            )
        time.sleep(0.1)
    server.started_s = time.monotonic() - started
    return server
