"""The scripted LLM server as a child process: ready means it answers; an exit or a hang fails clearly."""

from __future__ import annotations

import socket

import httpx
import pytest

from streams.dev.llm_process import LLMServerProcess


def test_start_returns_once_it_answers_and_stop_ends_it() -> None:
    with LLMServerProcess() as llm:
        models = httpx.get(f"{llm.base_url}/models", timeout=10).json()
        assert models["data"][0]["id"]
        assert "scripted LLM server on" in llm.output()
        proc = llm.proc
    assert proc is not None and proc.poll() is not None


def test_a_server_that_exits_fails_at_once_with_its_output() -> None:
    with socket.socket() as taken:  # its port is taken: the server cannot bind and exits
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        llm = LLMServerProcess()
        llm.port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="exited with") as info:
            llm.start()  # the long default bound: only the exit can end this wait early
        assert str(llm.port) in str(info.value)  # the server's own message names the port
    assert llm.proc is not None and llm.proc.poll() is not None


def test_a_server_not_ready_by_the_deadline_is_stopped() -> None:
    llm = LLMServerProcess()
    with pytest.raises(RuntimeError, match="did not answer"):
        llm.start(timeout_s=0)  # a fresh interpreter cannot answer within 0 s
    assert llm.proc is not None and llm.proc.poll() is not None
