"""``chatstream dev llm-server`` as a child process, for the demo and the benchmark.

A separate process, not ``ScriptedLLMServer`` on a thread: its JSON work must not compete with the
caller's event loop for the GIL, or the benchmark would measure itself.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from stack.ports import free_port


class LLMServerProcess:
    def __init__(self, latency_ms: float = 0.0, host: str = "127.0.0.1") -> None:
        self.latency_ms = latency_ms
        self.host = host
        self.port = free_port(host)
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 20.0) -> "LLMServerProcess":
        """Start it and return once it answers ``GET /v1/models``."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "dev", "llm-server", "--host", self.host, "--port", str(self.port),
             "--latency-ms", str(self.latency_ms)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the scripted LLM server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the scripted LLM server did not come up on {self.host}:{self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> "LLMServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
