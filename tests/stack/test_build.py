"""Cached builds: done once, never half-done, failures explained."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stack.build import Build, Builder, run_build
from stack.jaeger import Jaeger
from stack.kafka import Kafka
from stack.service import StackError
from stack.weaviate import Weaviate
from streams.config import Settings

PY = {"python": sys.executable}


def python_build(tmp_path: Path, code: str, calls: list[int]) -> Build:
    target = tmp_path / "cache" / "thing"

    def steps(builder: Builder, staging: Path) -> None:
        calls.append(1)
        builder.run([builder.tool_paths["python"], "-c", code, str(staging)])

    return Build(name="thing", title="the thing", expected="a moment", target_dir=target,
                 marker=target / "artefact", tools=(), steps=steps)


def test_build_once_then_cached(tmp_path) -> None:
    calls: list[int] = []
    build = python_build(tmp_path, "import sys, pathlib; pathlib.Path(sys.argv[1], 'artefact').write_text('x')", calls)
    said: list[str] = []
    run_build(build, tmp_path / "cache", PY, said.append)
    assert build.done() and calls == [1]
    assert any("building the thing: a moment" in line for line in said)
    run_build(build, tmp_path / "cache", PY, said.append)
    assert calls == [1]
    assert "rc=0" in (tmp_path / "cache" / "logs" / "thing-build.log").read_text()


def test_failed_build_leaves_nothing_that_looks_done(tmp_path) -> None:
    calls: list[int] = []
    code = "import sys, pathlib; pathlib.Path(sys.argv[1], 'artefact').write_text('half'); print('no network', file=sys.stderr); sys.exit(1)"
    build = python_build(tmp_path, code, calls)
    with pytest.raises(StackError) as info:
        run_build(build, tmp_path / "cache", PY, lambda _line: None)
    assert "no network" in str(info.value) and "docker compose" in str(info.value)
    assert not build.done() and not build.target_dir.exists()


def test_real_builds_name_their_cached_outputs(tmp_path) -> None:
    settings = Settings(cache_dir=tmp_path)
    kafka, weaviate, jaeger = Kafka(settings).build(), Weaviate(settings).build(), Jaeger(settings).build()
    assert kafka.marker == tmp_path / "kafka-3.9.1" / "libs" / "kafka_2.13-3.9.1.jar"
    assert weaviate.marker == tmp_path / "bin" / "weaviate-v1.35.2" / "weaviate-server"
    assert jaeger.marker == tmp_path / "bin" / "jaeger-v2.13.0" / "jaeger"
    assert "v1.76.0" in jaeger.title  # the Go tag cut with Jaeger v2.13.0
    assert not any(b.done() for b in (kafka, weaviate, jaeger))
