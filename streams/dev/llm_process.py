"""``chatstream dev llm-server`` as a child process, for the demo, the benchmark and replays.

A separate process, not ``ScriptedLLMServer`` on a thread: its JSON work must not compete with the
caller's event loop for the GIL, or the benchmark would measure itself.

Starting it means a fresh interpreter importing uvicorn, starlette and the generation helpers; on a
loaded 2-core machine that took longer than the 20 s this once waited. ``start`` therefore waits for
readiness (the port accepts connections, then ``GET /v1/models`` answers 200) up to a long bound,
but fails at once, with the server's own output, when the process exits.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from typing import IO

import httpx

from stack.ports import accepts_connections, free_port

START_TIMEOUT_S = 120.0  # a bound on a hang, not an expected time: it answers in ~1 s when the machine is idle


class LLMServerProcess:
    def __init__(self, latency_ms: float = 0.0, host: str = "127.0.0.1") -> None:
        self.latency_ms = latency_ms
        self.host = host
        self.port = free_port(host)
        self.proc: subprocess.Popen | None = None
        self._output: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "LLMServerProcess":
        """Start it and return once it answers ``GET /v1/models``; raise when it exits or after ``timeout_s``."""
        self._output = tempfile.TemporaryFile()  # its stdout+stderr, for the error message (a pipe could fill up)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "dev", "llm-server", "--host", self.host, "--port", str(self.port),
             "--latency-ms", str(self.latency_ms)],
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        last = "no answer yet"
        while True:
            if self.proc.poll() is not None:
                returncode, output = self.proc.returncode, self.output()
                self.stop()
                raise RuntimeError(f"the scripted LLM server exited with {returncode}; its output:\n{output}")
            last = self._not_ready(deadline) or ""
            if not last:
                return self
            if time.monotonic() >= deadline:
                output = self.output()
                self.stop()
                raise RuntimeError(
                    f"the scripted LLM server did not answer on {self.host}:{self.port} within {timeout_s:.0f} s "
                    f"({last}); its output:\n{output}"
                )
            time.sleep(delay)  # pause between two readiness checks
            delay = min(delay * 1.5, 0.5)

    def _not_ready(self, deadline: float) -> str | None:
        """None when the server answers ``GET /v1/models``; otherwise why not yet."""
        if not accepts_connections(self.host, self.port):
            return "port not accepting connections"
        try:
            response = httpx.get(f"{self.base_url}/models", timeout=max(0.5, min(5.0, deadline - time.monotonic())))
        except httpx.HTTPError as exc:
            return f"GET /v1/models failed: {type(exc).__name__}"
        return None if response.status_code == 200 else f"GET /v1/models answered {response.status_code}"

    def output(self) -> str:
        """What the server printed so far (its last 40 lines)."""
        if self._output is None:
            return ""
        self._output.seek(0)
        lines = self._output.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-40:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> "LLMServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
