"""Where a worker's Python time goes, by library: py-spy's GIL samples over the benchmark window.

Why: CPU per turn says *how much* a turn costs, not *what* to cut. The worker is one asyncio thread
holding the GIL plus threads that mostly do not (ONNX, librdkafka); sampling only the thread that
holds the GIL (``py-spy record --gil``) shows what the event loop's time is spent on, which is what
limits a worker's throughput.

Each sample is charged to the library its innermost non-standard-library frame belongs to:
``redis/asyncio/connection.py`` -> redis-py, ``opentelemetry/...`` -> OpenTelemetry; a sample whose
innermost such frame is our own code is charged to that module (``streams/codec.py`` is mostly
fastavro's compiled encoder, ``streams/producer.py`` librdkafka's ``produce``: compiled extensions
have no Python frames of their own); a sample with only standard-library frames is the asyncio loop
itself (selectors, callbacks, tasks). A frame's package is read from its full path
(``--full-filenames``: py-spy's short names drop the package of some files).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# top-level package -> the label a reader knows it by
LIBRARIES = {
    "opentelemetry": "OpenTelemetry",
    "google": "protobuf (span export)",
    "grpc": "grpc",
    "redis": "redis-py",
    "httpx": "httpx",
    "httpcore": "httpx",
    "h11": "httpx",
    "anyio": "httpx",
    "openai": "openai SDK",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "confluent_kafka": "confluent-kafka",
    "weaviate": "weaviate-client",
    "fastavro": "fastavro",
    "onnxruntime": "embedding (onnxruntime)",
    "tokenizers": "embedding (onnxruntime)",
    "numpy": "numpy",
    "tenacity": "tenacity",
    "prometheus_client": "prometheus_client",
}
OWN_PACKAGES = ("streams", "processors", "connectors")
LOOP = "asyncio loop and stdlib"


_STDLIB = sysconfig.get_paths()["stdlib"].rstrip("/") + "/"
_SITE_MARKERS = ("/site-packages/", "/dist-packages/")


def _path(frame: str) -> str:
    start = frame.rfind(" (")
    return frame[start + 2 : frame.rfind(":")] if start >= 0 else ""


def _bucket(path: str) -> str | None:
    """What one frame's file (a full path, ``py-spy --full-filenames``) belongs to: an installed
    package, ``ours: <module>``, or None for the standard library and code without a file."""
    if not path or path.startswith("<"):
        return None
    for marker in _SITE_MARKERS:
        if marker in path:
            inside = path.split(marker, 1)[1]
            package = inside.split("/", 1)[0].removesuffix(".py")
            return "ours: " + inside if package in OWN_PACKAGES else LIBRARIES.get(package, package)
    if path.startswith(_STDLIB):
        return None
    parts = path.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in OWN_PACKAGES:
            return "ours: " + "/".join(parts[i:])
    return None  # the standard library (or a frozen module)


_LOOP_ENTRIES = (_STDLIB + "asyncio/runners.py", _STDLIB + "asyncio/base_events.py")


def charge(stack: str) -> str:
    """The bucket one sampled stack (frames root first, ``;``-separated) is charged to.

    A frame of ours that only started the event loop (``asyncio.run`` in the worker's entry point)
    does not own what the loop does between callbacks: that is the loop's."""
    paths = [_path(frame) for frame in stack.split(";")]
    for i in range(len(paths) - 1, -1, -1):
        bucket = _bucket(paths[i])
        if bucket is not None:
            if i + 1 < len(paths) and paths[i + 1].startswith(_LOOP_ENTRIES):
                return LOOP
            return bucket
    return LOOP


@dataclass
class Profile:
    """GIL samples by bucket; ``share`` in percent of all samples."""

    samples: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.samples.values())

    def share(self) -> dict[str, float]:
        total = self.total or 1
        return {k: 100.0 * v / total for k, v in self.samples.most_common()}

    def libraries(self) -> dict[str, float]:
        """Shares with our own modules summed into one line (the headline a reader wants first)."""
        grouped: Counter[str] = Counter()
        for bucket, n in self.samples.items():
            grouped["chatstream (our code)" if bucket.startswith("ours: ") else bucket] += n
        total = sum(grouped.values()) or 1
        return {k: 100.0 * v / total for k, v in grouped.most_common()}


def parse_raw(text: str) -> Profile:
    """py-spy's ``--format raw`` output (``frame;frame;... count`` per line) bucketed."""
    profile = Profile()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            profile.samples[charge(stack)] += int(count)
    return profile


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class GilProfiler:
    """``py-spy record --gil`` on one process from ``start`` until ``stop`` (SIGINT makes it write)."""

    def __init__(self, pid: int, rate_hz: int = 200) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("--profile needs py-spy: `pip install py-spy` (it is in the test extras)")
        self.pid = pid
        fd, self.path = tempfile.mkstemp(prefix=f"chatstream-profile-{pid}-", suffix=".txt")
        os.close(fd)
        self._cmd = [exe, "record", "--gil", "--nonblocking", "--full-filenames", "-r", str(rate_hz), "-f", "raw", "-o", self.path,
                     "-p", str(pid)]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self, timeout_s: float = 30.0) -> Profile:
        """Stop sampling and read what was sampled; raises with py-spy's own words if it failed."""
        proc, self._proc = self._proc, None
        if proc is None:
            raise RuntimeError("the profiler was not started")
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        try:
            text = Path(self.path).read_text()
        finally:
            Path(self.path).unlink(missing_ok=True)
        if not text.strip():
            raise RuntimeError(f"py-spy recorded nothing for pid {self.pid}: {err.decode(errors='replace').strip()[-500:]}")
        return parse_raw(text)


def profile_lines(profile: Profile, top_modules: int = 8) -> list[str]:
    """The report: libraries first, then our own modules that took the most."""
    libraries = ", ".join(f"{name} {pct:.0f} %" for name, pct in profile.libraries().items() if pct >= 0.5)
    lines = [f"worker GIL time by library ({profile.total} samples): {libraries}"]
    own = [(k.removeprefix("ours: "), v) for k, v in profile.share().items() if k.startswith("ours: ")]
    if own:
        lines.append("  our code by module: " + ", ".join(f"{m} {pct:.1f} %" for m, pct in own[:top_modules]))
    return lines
