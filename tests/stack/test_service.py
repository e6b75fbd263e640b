"""The base every local service shares: detached start, pid file, readiness polling, stop by pid only."""

from __future__ import annotations

import os
import time

import pytest

from stack.service import StackError, process_start_time, render, tail_file


def test_start_detaches_and_stop_removes_pid_file(make_service) -> None:
    service = make_service()
    pid = service.start()
    assert service.pid() == pid
    recorded_pid, started = service.pid_file.read_text().splitlines()[0].split()
    assert int(recorded_pid) == pid and int(started) == process_start_time(pid)
    assert not service.settings_changed()
    assert os.getsid(pid) == pid, "own session: no terminal hang-up reaches it, its group is its own"
    assert service.wait_ready() < 5
    assert "fake server starting" in service.log_file.read_text()

    assert service.stop() is True
    assert service.pid() is None and not service.pid_file.exists()
    assert process_start_time(pid) is None
    assert service.stop() is False  # stopping a stopped service is a no-op


def test_stop_escalates_to_sigkill_after_the_deadline(make_service) -> None:
    service = make_service(mode="ignore-term")
    pid = service.start()
    service.wait_ready()
    began = time.monotonic()
    assert service.stop(timeout_s=0.5)
    assert 0.5 <= time.monotonic() - began < 5
    assert process_start_time(pid) is None


def test_recycled_pid_is_never_signalled(make_service) -> None:
    """A pid file naming a live process with another start time is stale: removed, nothing killed."""
    service = make_service()
    service.pid_file.parent.mkdir(parents=True)
    service.pid_file.write_text(f"{os.getpid()} 1\n")  # our own pid, wrong start time
    assert service.pid() is None
    assert not service.pid_file.exists()
    assert service.stop() is False  # and this test process is still alive to assert it


def test_garbage_pid_file_counts_as_not_running(make_service) -> None:
    service = make_service()
    service.pid_file.parent.mkdir(parents=True)
    service.pid_file.write_text("not a pid\n")
    assert service.pid() is None


def test_wait_ready_fails_fast_with_the_log_when_the_process_dies(make_service) -> None:
    service = make_service(mode="crash")
    service.start()
    began = time.monotonic()
    with pytest.raises(StackError, match="exited while starting") as info:
        service.wait_ready(timeout_s=30)
    assert time.monotonic() - began < 10
    assert "boom" in str(info.value)


def test_wait_ready_is_bounded(make_service) -> None:
    service = make_service(mode="never-ready")
    service.start()
    with pytest.raises(StackError, match="did not become ready within 1s"):
        service.wait_ready(timeout_s=1)
    assert service.is_running()  # the caller (the manager) decides what to stop


def test_render_refuses_missing_values() -> None:
    with pytest.raises(KeyError):
        render("redis.conf", host="127.0.0.1")


def test_tail_file_reads_only_the_end(tmp_path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail_file(log, 2) == "line 99998\nline 99999"
    assert "no log yet" in tail_file(tmp_path / "absent.log")
