"""The worker profile of ``bench --profile``: samples charged to the right library, and a live py-spy run."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap

import pytest

from streams.bench.profile import LOOP, GilProfiler, charge, parse_raw, profile_lines, py_spy

STD = sysconfig.get_paths()["stdlib"]
SITE = "/venv/lib/python3.11/site-packages"
REPO = "/work/checkout"


def test_a_sample_is_charged_to_its_innermost_library_frame() -> None:
    stack = (f"run ({STD}/asyncio/base_events.py:1)", f"Lane._run ({REPO}/streams/runtime/lane.py:9)",
             f"Sessions.enrich ({REPO}/processors/session.py:5)", f"Pipeline.execute ({SITE}/redis/asyncio/client.py:7)",
             f"StreamReader.read ({STD}/asyncio/streams.py:3)")
    assert charge(";".join(stack)) == "redis-py"  # the stdlib leaf below redis-py counts as redis-py


def test_own_code_is_charged_to_its_module_and_the_bare_loop_to_the_loop() -> None:
    assert charge(f"run ({STD}/asyncio/base_events.py:1);Codec.encode ({REPO}/streams/codec.py:40)") == "ours: streams/codec.py"
    assert charge(f"run ({STD}/asyncio/base_events.py:1);select ({STD}/selectors.py:4)") == LOOP
    assert charge("<module> (<string>:1)") == LOOP
    started_the_loop = f"main ({REPO}/streams/runtime/worker.py:9);run ({STD}/asyncio/runners.py:1)"
    assert charge(f"{started_the_loop};select ({STD}/selectors.py:4)") == LOOP
    assert charge(f"{started_the_loop};_run ({STD}/asyncio/events.py:2);f ({REPO}/streams/runtime/lane.py:3)") == "ours: streams/runtime/lane.py"
    assert charge(f"x ({SITE}/opentelemetry/sdk/trace/__init__.py:3);y ({SITE}/google/protobuf/message.py:2)") == "protobuf (span export)"
    assert charge(f"f ({SITE}/streams/codec.py:3)") == "ours: streams/codec.py"  # installed, not editable


def test_raw_output_is_counted_and_shared() -> None:
    loop = f"a ({STD}/asyncio/events.py:1)"
    raw = "\n".join([
        f"{loop};b ({SITE}/opentelemetry/trace/__init__.py:2) 30",
        f"{loop};b ({REPO}/streams/codec.py:2) 10",
        f"{loop};b ({REPO}/processors/session.py:2) 10",
        f"{loop} 50",
        "not a sample line",
    ])
    profile = parse_raw(raw)
    assert profile.total == 100
    assert profile.libraries() == {LOOP: 50.0, "OpenTelemetry": 30.0, "chatstream (our code)": 20.0}
    assert profile.share()["ours: streams/codec.py"] == 10.0
    text = "\n".join(profile_lines(profile))
    assert "OpenTelemetry 30 %" in text and "streams/codec.py 10.0 %" in text


def test_py_spy_samples_a_live_process_by_library() -> None:
    assert py_spy() is not None, "py-spy is in the test extras"
    busy = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""\
        import time
        from opentelemetry.sdk.trace import TracerProvider
        tracer = TracerProvider().get_tracer("probe")
        print("ready", flush=True)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            with tracer.start_as_current_span("s", attributes={"a": 1}):
                pass
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert busy.stdout.readline().strip() == "ready"
        profiler = GilProfiler(busy.pid, rate_hz=100)
        profiler.start()
        import time

        time.sleep(1.5)  # sampling window: the profile is of a time span by definition
        profile = profiler.stop()
    finally:
        busy.kill()
        busy.wait()
    assert profile.total > 20
    assert max(profile.libraries(), key=profile.libraries().get) == "OpenTelemetry"


def test_stop_without_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        GilProfiler(1).stop()
