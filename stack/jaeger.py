"""Jaeger v2 (an OpenTelemetry Collector distribution) with in-memory storage, built from its Go module.

Jaeger's module path has no ``/v2``, so its v2 binary is built from the ``v1.x`` tag cut with each v2
release (``jaeger_go_tag``). ``go install module@version`` refuses that module because its go.mod has
``replace`` directives, so the build downloads the module source and runs ``go build`` inside it.
The binary serves the query API; the web UI's assets are not part of the Go module.
"""

from __future__ import annotations

import json
from pathlib import Path

from stack.build import Build, Builder
from stack.ports import Port, accepts_connections
from stack.service import NotReady, Service, StackError, render, require_file
from stack.tools import GO

MODULE = "github.com/jaegertracing/jaeger"


class Jaeger(Service):
    name = "jaeger"

    @property
    def title(self) -> str:
        return f"Jaeger {self.settings.jaeger_version}"

    @property
    def binary(self) -> Path:
        return self.cache / "bin" / f"jaeger-{self.settings.jaeger_version}" / "jaeger"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "jaeger.yaml"

    def ports(self) -> list[Port]:
        s = self.settings
        return [
            Port(s.jaeger_otlp_grpc_port, "OTLP/gRPC receiver", "jaeger_otlp_grpc_port"),
            Port(s.jaeger_otlp_http_port, "OTLP/HTTP receiver", "jaeger_otlp_http_port"),
            Port(s.jaeger_query_port, "query API", "jaeger_query_port"),
            Port(s.jaeger_query_grpc_port, "query gRPC API", "jaeger_query_grpc_port"),
        ]

    def endpoints(self) -> dict[str, str]:
        s = self.settings
        return {
            "otlp-grpc": f"http://{self.host}:{s.jaeger_otlp_grpc_port}",
            "otlp-http": f"http://{self.host}:{s.jaeger_otlp_http_port}",
            "query": f"http://{self.host}:{s.jaeger_query_port}",
        }

    def build(self) -> Build:
        tag = self.settings.jaeger_go_tag
        version = self.settings.jaeger_version

        def steps(builder: Builder, staging: Path) -> None:
            go = builder.tool(GO)
            info = json.loads(builder.run([go, "mod", "download", "-json", f"{MODULE}@{tag}"]))
            if info.get("Error") or not info.get("Dir"):
                raise StackError(f"go mod download {MODULE}@{tag} failed: {info.get('Error', 'no Dir in answer')}")
            builder.run(
                [go, "build", "-trimpath", "-o", str(staging / "jaeger"), "./cmd/jaeger"],
                cwd=Path(info["Dir"]),
                env=builder.env(CGO_ENABLED="0"),
            )

        return Build(
            name=f"jaeger-{version}",
            title=f"Jaeger {version} (go build ./cmd/jaeger of {MODULE}@{tag})",
            expected="about 5 min on 2 cores when Go's module and build caches are empty",
            target_dir=self.binary.parent,
            marker=self.binary,
            tools=(GO,),
            steps=steps,
        )

    def render_config(self) -> str:
        s = self.settings
        return render(
            "jaeger.yaml",
            host=self.host,
            otlp_grpc_port=s.jaeger_otlp_grpc_port,
            otlp_http_port=s.jaeger_otlp_http_port,
            query_port=s.jaeger_query_port,
            query_grpc_port=s.jaeger_query_grpc_port,
            max_traces=s.jaeger_max_traces,
        )

    def prepare(self) -> None:
        self.config_file.write_text(self.render_config())

    def command(self) -> list[str]:
        binary = require_file(self.binary, "the Jaeger binary")
        return [str(binary), "--config", str(self.config_file)]

    def probe(self) -> None:
        import httpx

        s = self.settings
        try:
            response = httpx.get(f"http://{self.host}:{s.jaeger_query_port}/api/services", timeout=2.0)
        except httpx.HTTPError as exc:
            raise NotReady(f"query API not answering: {exc}") from exc
        try:
            answered = response.status_code == 200 and "data" in response.json()
        except ValueError:  # not JSON: something else answers on this port
            answered = False
        if not answered:
            raise NotReady(f"/api/services answered {response.status_code} {response.text[:80]!r}")
        # Extensions start before pipelines: the receivers may still be coming up.
        for port in (s.jaeger_otlp_grpc_port, s.jaeger_otlp_http_port):
            if not accepts_connections(self.host, port):
                raise NotReady(f"OTLP receiver on {port} not listening yet")
