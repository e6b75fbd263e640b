"""Start, stop and kill ``chatstream worker`` processes (demo, benchmarks, crash tests).

A real child process, not an in-process app: crash tests must ``kill -9`` it, benchmarks read its
peak RSS, and the demo must show what an operator would run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streams.config import Settings

ENV_FIELDS = (
    "home",  # where the stack's generated credentials are (Settings.stack_secret)
    "topic_prefix",
    "consumer_group",
    "kafka_bootstrap",
    "redis_url",
    "llm_base_url",
    "llm_model",
    "llm_timeout_s",
    "llm_max_retries",
    "max_in_flight",
    "partitions",
    "otlp_endpoint",
    "tenant",
    "rate_limit_per_minute",
    "rate_limit_burst",
    "circuit_failure_threshold",
    "circuit_reset_s",
    "shutdown_grace_s",
    "weaviate_http_port",
    "weaviate_grpc_port",
    "collection",
    "kafka_session_timeout_s",
    "llm_deadline_s",
    "llm_client",
    "llm_turn_budget_s",
    "llm_first_token_timeout_s",
    "llm_stream_stall_s",
    "llm_stream_holdback_chars",
    "llm_stream_delta_interval_ms",
    "llm_stream_channels",
    "llm_backoff_base_s",
    "llm_retry_after_max_s",
    "channels",
)


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a child process build the same Settings."""
    env = dict(os.environ)
    for name in ENV_FIELDS:
        value = getattr(settings, name)
        if isinstance(value, (list, dict)):
            import json

            env[f"CHATSTREAM_{name.upper()}"] = json.dumps(value)  # pydantic-settings reads JSON for these
        else:
            env[f"CHATSTREAM_{name.upper()}"] = "" if value is None else str(value)
    for name in ("llm_api_key", "weaviate_api_key", "redis_password"):
        value = getattr(settings, name)
        if value is not None:
            env[f"CHATSTREAM_{name.upper()}"] = value.get_secret_value()
    env.update(extra)
    return env


class WorkerProcess:
    def __init__(self, settings: Settings, stages: list[str] | None = None, log_path: Path | None = None, **env: str) -> None:
        self.settings = settings
        self.stages = stages or []
        self.log_path = log_path or (settings.home / "logs" / f"worker-{os.getpid()}-{time.monotonic_ns()}.log")
        self.env = settings_env(settings, **{"CHATSTREAM_METRICS_PORT": "0", **env})
        self.proc: subprocess.Popen | None = None
        self.metrics_url: str | None = None

    def start(self) -> "WorkerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "streams.cli", "worker"]
        for stage in self.stages:
            cmd += ["--stage", stage]
        with open(self.log_path, "ab") as log_file:  # the child writes through its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_started(self, timeout_s: float = 60.0) -> None:
        """Until every stage reported started (or the process died)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker exited with {self.proc.returncode if self.proc else '?'}:\n{self.tail()}")
            if "stages started" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker did not start within {timeout_s} s:\n{self.tail()}")

    def kill(self) -> None:
        """kill -9: no cleanup, no commit (crash tests)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)  # type: ignore[union-attr]

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the graceful path."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else 0

    def peak_rss_mb(self) -> float:
        """VmHWM of the live process, in MiB."""
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def __enter__(self) -> "WorkerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.terminate(30)
