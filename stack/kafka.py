"""Apache Kafka in KRaft mode, run from Maven Central's jars: one node, or a cluster of three.

Kafka is not packaged for Debian or PyPI; its broker classpath is on Maven Central, so `stack/pom.xml`
resolves it once into the cache and the broker runs as plain ``java -cp 'libs/*' kafka.Kafka``.

Every node is broker and controller at once. With ``kafka_brokers=3`` (`stack up --brokers 3`) node i
(``kafka``, ``kafka2``, ``kafka3``) listens on ``kafka_port + 2(i-1)`` and ``kafka_controller_port +
2(i-1)``, the three controllers form the quorum, all share one cluster id (formatted once per state
folder), and the internal topics get 3 replicas with ``min.insync.replicas=2``, as the pipeline's
topics do (``streams.topics``): one node can die without losing an acknowledged write.
"""

from __future__ import annotations

import base64
import functools
import logging
import shlex
import subprocess
import uuid
from pathlib import Path

from stack.build import Build, Builder
from stack.ports import Port, accepts_connections
from stack.service import NotReady, Service, StackError, render, tail_file
from stack.tools import JAVA, MAVEN, Tool, find, java_major

POM = Path(__file__).parent / "pom.xml"
MIN_JAVA = 11
_quiet = logging.getLogger("chatstream.stack.kafka.probe")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False  # librdkafka's "connection refused" while the broker boots is expected noise


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what `kafka-storage random-uuid` prints).

    Never one that starts with "-": `kafka-storage format -t -abc...` reads it as an option and fails
    ("argument --cluster-id/-t: expected one argument"), one first start in 64. Kafka's own
    ``Uuid.randomUuid`` redraws such ids for the same reason.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_nodes(settings) -> list["Kafka"]:  # type: ignore[no-untyped-def]
    """One ``Kafka`` service per node of the configured cluster."""
    return [Kafka(settings, node) for node in range(1, max(1, settings.kafka_brokers) + 1)]


class Kafka(Service):
    name = "kafka"

    def __init__(self, settings, node: int = 1) -> None:  # type: ignore[no-untyped-def]
        super().__init__(settings)
        self.node = node
        self.nodes = max(1, settings.kafka_brokers)
        if not 1 <= node <= self.nodes:
            raise ValueError(f"node {node} of a {self.nodes}-node cluster")
        self.name = "kafka" if node == 1 else f"kafka{node}"

    @property
    def title(self) -> str:
        suffix = f" node {self.node}/{self.nodes}" if self.nodes > 1 else ""
        return f"Kafka {self.settings.kafka_version}{suffix}"

    @property
    def port(self) -> int:
        return self.settings.kafka_port + 2 * (self.node - 1)

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_controller_port + 2 * (self.node - 1)

    @property
    def libs_dir(self) -> Path:
        return self.cache / f"kafka-{self.settings.kafka_version}" / "libs"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "data"

    @property
    def server_properties(self) -> Path:
        return self.config_dir / f"{self.name}-server.properties"

    @property
    def log4j_properties(self) -> Path:
        return self.config_dir / "kafka-log4j.properties"

    @property
    def cluster_id_file(self) -> Path:
        return self.home / "kafka-cluster-id"

    def ports(self) -> list[Port]:
        return [
            Port(self.port, "broker listener", "kafka_port"),
            Port(self.controller_port, "KRaft controller listener", "kafka_controller_port"),
        ]

    def endpoints(self) -> dict[str, str]:
        return {"bootstrap": f"{self.host}:{self.port}"}

    def tools(self) -> list[Tool]:
        return [JAVA]

    def build(self) -> Build:
        version = self.settings.kafka_version

        def steps(builder: Builder, staging: Path) -> None:
            builder.run([
                builder.tool(MAVEN), "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
                f"-Dkafka.version={version}", f"-DoutputDirectory={staging}", "-f", str(POM),
            ])

        return Build(
            name=f"kafka-{version}",
            title=f"Kafka {version} jars (mvn dependency:copy-dependencies from Maven Central)",
            expected="about 1 min with a cold ~/.m2 (about 60 MB of jars)",
            target_dir=self.libs_dir,
            marker=self.libs_dir / f"kafka_2.13-{version}.jar",
            tools=(MAVEN,),
            steps=steps,
        )

    def render_server_properties(self) -> str:
        replicas = min(3, self.nodes)
        voters = ",".join(
            f"{i}@{self.host}:{self.settings.kafka_controller_port + 2 * (i - 1)}" for i in range(1, self.nodes + 1)
        )
        return render(
            "kafka-server.properties",
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            log_dirs=self.log_dirs,
            node_id=self.node,
            voters=voters,
            replicas=replicas,
            min_isr=2 if replicas >= 3 else 1,
        )

    def cluster_id(self) -> str:
        """One id for every node of this state folder's cluster (each node formats its own storage)."""
        if self.nodes == 1:
            return new_cluster_id()
        if not self.cluster_id_file.exists():
            self.cluster_id_file.write_text(new_cluster_id() + "\n")
        return self.cluster_id_file.read_text().strip()

    def java_command(self, main_class: str, *args: str) -> list[str]:
        """``java`` with the heap and ``kafka_jvm_options`` (collector, JIT) before the class to run.

        Why not Kafka's own G1 + C2 defaults: this broker lives for a test run or a bench on a small
        machine, and there C2 kept compiling through every bench (44 % of the broker's CPU on a fresh
        broker, still 2.3 ms per turn after 200,000 warm-up requests), while C1-only code costs about
        0.1 ms per turn to compile. The parallel collector has no concurrent threads or G1 barriers for
        a 512 MB heap to pay for. Measured in the issue-9 broker note (`chatstream bench`, back to back).
        """
        java = find(JAVA, self.cache)
        if java is None:
            raise StackError("java is not installed; apt-get install -y openjdk-17-jre-headless")
        return [
            java, f"-Xmx{self.settings.kafka_heap}", "-Xms128m", *shlex.split(self.settings.kafka_jvm_options),
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.log4j_properties}",
            "-cp", f"{self.libs_dir}/*", main_class, *args,
        ]

    def prepare(self) -> None:
        java = find(JAVA, self.cache)
        major = java_major_cached(java) if java else None
        if major is not None and major < MIN_JAVA:
            raise StackError(f"Kafka needs Java {MIN_JAVA}+ but {java} is Java {major}; "
                             "apt-get install -y openjdk-17-jre-headless")
        self.server_properties.write_text(self.render_server_properties())
        self.log4j_properties.write_text(render("kafka-log4j.properties"))
        if not (self.log_dirs / "meta.properties").exists():
            self.format_storage()

    def format_storage(self) -> None:
        """First start only: KRaft refuses to run on an unformatted log directory."""
        self.log_dirs.mkdir(parents=True, exist_ok=True)
        cmd = self.java_command("kafka.tools.StorageTool", "format", "-t", self.cluster_id(),
                                "-c", str(self.server_properties))
        with open(self.log_file, "ab") as log:
            log.write(b"\n--- chatstream: formatting KRaft storage\n")
            log.flush()
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=180)
            except subprocess.TimeoutExpired as exc:
                raise StackError(f"formatting Kafka's storage took over 180s; see {self.log_file}") from exc
        if proc.returncode != 0:
            raise StackError(f"formatting Kafka's storage failed; last lines of {self.log_file}:\n"
                             f"{tail_file(self.log_file, 20)}")

    def command(self) -> list[str]:
        return self.java_command("kafka.Kafka", str(self.server_properties))

    def probe(self) -> None:
        self._metadata_brokers()

    def probe_started(self) -> None:
        """Ready after a start only once this node lists every node of the cluster: each broker learns of
        the others a moment apart, and `topics create` run at once would otherwise size the replication
        for the brokers that one node happened to know (2 of 3 was seen)."""
        if len(known := self._metadata_brokers()) < self.nodes:
            raise NotReady(f"node {self.node} lists {len(known)} of the cluster's {self.nodes} brokers so far")

    def _metadata_brokers(self) -> dict:  # type: ignore[type-arg]
        if not accepts_connections(self.host, self.port):
            raise NotReady("broker port not accepting connections")
        # the project's one Kafka client factory (confluent_kafka is a heavy import: only once the port is open);
        # it probes this service's own listener, which may differ from settings.kafka_bootstrap
        from streams.runtime.clients import make_admin

        admin = make_admin(self.settings, **{
            "bootstrap.servers": f"{self.host}:{self.port}",
            "socket.timeout.ms": 3000,
            "logger": _quiet,
        })
        try:
            metadata = admin.list_topics(timeout=3)
        except Exception as exc:  # KafkaException: no metadata answer yet
            raise NotReady(f"metadata request failed: {exc}") from exc
        if not metadata.brokers:
            raise NotReady("metadata answer lists no broker yet")
        if self.node not in metadata.brokers:
            raise NotReady(f"node {self.node} is not registered with the cluster yet")
        return metadata.brokers


@functools.lru_cache(maxsize=4)
def java_major_cached(java: str) -> int | None:
    """``java -version`` costs a JVM start; ask once per process."""
    return java_major(java)
