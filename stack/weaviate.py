"""Weaviate built from its Go module at a pinned release, one node, API-key authentication, no vectorizer.

We bring our own vectors, so no module is enabled. Everything it can bind is pinned to loopback or a
configurable port: REST via ``--host``, gossip, RAFT and internal RPC via ``CLUSTER_BIND_ADDR``.
Known limit of v1.35.2: the gRPC API (``GRPC_PORT``) and the cluster data port listen on all
interfaces (``net.Listen(":port")`` in its source, no setting changes it). So nothing is anonymous:
REST and gRPC want the API key `stack up` generates into the state folder (clients read it through
``Settings.stack_secret``), and the cluster data port wants HTTP basic auth with a generated password.
"""

from __future__ import annotations

from pathlib import Path

from stack.build import Build, Builder
from stack.ports import Port
from stack.secrets import WEAVIATE_API_KEY, WEAVIATE_CLUSTER_PASSWORD, ensure_secret
from stack.service import NotReady, Service, require_file
from stack.tools import GO

MODULE = "github.com/weaviate/weaviate/cmd/weaviate-server"
NODE_NAME = "node1"
API_USER = "chatstream"  # the identity Weaviate logs for requests made with our API key
GRPC_SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}


class Weaviate(Service):
    name = "weaviate"

    @property
    def title(self) -> str:
        return f"Weaviate {self.settings.weaviate_version}"

    @property
    def binary(self) -> Path:
        return self.cache / "bin" / f"weaviate-{self.settings.weaviate_version}" / "weaviate-server"

    def ports(self) -> list[Port]:
        s = self.settings
        return [
            Port(s.weaviate_http_port, "REST API", "weaviate_http_port"),
            Port(s.weaviate_grpc_port, "gRPC API", "weaviate_grpc_port"),
            Port(s.weaviate_gossip_port, "cluster gossip", "weaviate_gossip_port"),
            Port(s.weaviate_data_port, "cluster data", "weaviate_data_port"),
            Port(s.weaviate_raft_port, "RAFT", "weaviate_raft_port"),
            Port(s.weaviate_raft_rpc_port, "RAFT internal RPC", "weaviate_raft_rpc_port"),
        ]

    def endpoints(self) -> dict[str, str]:
        return {
            "rest": f"http://{self.host}:{self.settings.weaviate_http_port}",
            "grpc": f"{self.host}:{self.settings.weaviate_grpc_port}",
        }

    def build(self) -> Build:
        version = self.settings.weaviate_version

        def steps(builder: Builder, staging: Path) -> None:
            builder.run(
                [builder.tool(GO), "install", f"{MODULE}@{version}"],
                env=builder.env(GOBIN=str(staging), CGO_ENABLED="0"),
            )

        return Build(
            name=f"weaviate-{version}",
            title=f"Weaviate {version} (go install {MODULE})",
            expected="about 5 min on 2 cores when Go's module and build caches are empty",
            target_dir=self.binary.parent,
            marker=self.binary,
            tools=(GO,),
            steps=steps,
        )

    def prepare(self) -> None:
        self.api_key()
        ensure_secret(self.settings, WEAVIATE_CLUSTER_PASSWORD)

    def api_key(self) -> str:
        """The key clients must send (the configured one, else generated once into the state folder)."""
        return ensure_secret(self.settings, WEAVIATE_API_KEY)

    def environment(self) -> dict[str, str]:
        s = self.settings
        return {
            # gRPC and the cluster data port listen on all interfaces: nothing may answer anonymously
            "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
            "AUTHENTICATION_APIKEY_ENABLED": "true",
            "AUTHENTICATION_APIKEY_ALLOWED_KEYS": self.api_key(),
            "AUTHENTICATION_APIKEY_USERS": API_USER,
            "CLUSTER_BASIC_AUTH_USERNAME": API_USER,
            "CLUSTER_BASIC_AUTH_PASSWORD": ensure_secret(s, WEAVIATE_CLUSTER_PASSWORD),
            "PERSISTENCE_DATA_PATH": str(self.data_dir / "data"),
            "DEFAULT_VECTORIZER_MODULE": "none",
            "ENABLE_MODULES": "",
            "API_BASED_MODULES_DISABLED": "true",  # no text2vec-openai & co.: we bring vectors
            "CLUSTER_HOSTNAME": NODE_NAME,
            "CLUSTER_BIND_ADDR": self.host,
            "CLUSTER_ADVERTISE_ADDR": self.host,
            "CLUSTER_GOSSIP_BIND_PORT": str(s.weaviate_gossip_port),
            "CLUSTER_DATA_BIND_PORT": str(s.weaviate_data_port),
            "RAFT_PORT": str(s.weaviate_raft_port),
            "RAFT_INTERNAL_RPC_PORT": str(s.weaviate_raft_rpc_port),
            "RAFT_JOIN": NODE_NAME,
            "RAFT_BOOTSTRAP_EXPECT": "1",
            "GRPC_PORT": str(s.weaviate_grpc_port),
            "DISABLE_TELEMETRY": "true",  # no usage reports sent home
            "GO_PROFILING_DISABLE": "true",  # else pprof listens on :6060, all interfaces
            "PROMETHEUS_MONITORING_ENABLED": "false",
            "QUERY_DEFAULTS_LIMIT": "25",
            # each half of a hybrid search fetches this many objects before fusing; see bench --kb
            "QUERY_HYBRID_MAXIMUM_RESULTS": str(s.weaviate_hybrid_max_results),
            "LOG_LEVEL": "info",
        }

    def command(self) -> list[str]:
        binary = require_file(self.binary, "the Weaviate binary")
        return [
            str(binary), "--host", self.host, "--port", str(self.settings.weaviate_http_port), "--scheme", "http",
        ]

    def probe(self) -> None:
        """Ready, and our key accepted: a server started with another key would fail every client."""
        import httpx

        base = f"http://{self.host}:{self.settings.weaviate_http_port}"
        try:
            response = httpx.get(f"{base}/v1/.well-known/ready", timeout=2.0)
            if response.status_code != 200:
                raise NotReady(f"/v1/.well-known/ready answered {response.status_code}")
            key = self.settings.stack_secret(WEAVIATE_API_KEY)
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            response = httpx.get(f"{base}/v1/meta", headers=headers, timeout=2.0)
        except httpx.HTTPError as exc:
            raise NotReady(f"REST not answering: {exc}") from exc
        if response.status_code != 200:
            raise NotReady(f"/v1/meta answered {response.status_code} with the key of {self.settings.secret_path(WEAVIATE_API_KEY)}")
        self._probe_grpc()

    def _probe_grpc(self) -> None:
        """gRPC health check, the same round trip weaviate-client's connect makes before queries.

        Sent raw rather than through ``weaviate.connect_to_local``: the client's start-up checks also
        ask PyPI for the latest client version, which a readiness probe (run by `status` and by the test
        fixtures, maybe offline) must not depend on. Request: empty HealthCheckRequest; answer
        ``08 01`` = status SERVING.
        """
        import grpc

        target = f"{self.host}:{self.settings.weaviate_grpc_port}"
        try:
            with grpc.insecure_channel(target) as channel:
                check = channel.unary_unary(
                    "/grpc.health.v1.Health/Check",
                    request_serializer=lambda raw: raw,
                    response_deserializer=lambda raw: raw,
                )
                answer = check(b"", timeout=2.0)
        except grpc.RpcError as exc:
            raise NotReady(f"gRPC health check on {target} failed: {exc.code().name}") from exc
        if answer != GRPC_SERVING:
            raise NotReady(f"gRPC health check on {target} answered {answer!r}, not SERVING")
