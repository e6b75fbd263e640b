"""`up`/`down`/`status` over several services: order, idempotence, and nothing left half-started."""

from __future__ import annotations

import socket

import pytest

from stack.manager import SERVICE_NAMES, Stack
from stack.ports import free_port
from stack.service import StackError
from stack.tools import Tool


def stack_of(settings, *services) -> tuple[Stack, list[str]]:
    lines: list[str] = []
    return Stack(settings, out=lines.append, services=list(services)), lines


def test_default_order_is_dependency_order() -> None:
    assert SERVICE_NAMES == ("kafka", "redis", "weaviate", "jaeger")


def test_up_starts_all_then_is_a_no_op(stack_settings, make_service) -> None:
    a, b = make_service("a"), make_service("b", delay=0.5)
    stack, lines = stack_of(stack_settings, a, b)
    assert [s.name for s in stack.up()] == ["a", "b"]
    assert a.ready() and b.ready()
    pids = (a.pid(), b.pid())
    assert any(line.startswith("  a ") and "a://" in line for line in lines), lines

    assert stack.up() == []  # nothing started the second time
    assert (a.pid(), b.pid()) == pids
    assert [row.state for row in stack.status()] == ["up", "up"]


def test_failed_up_stops_only_what_it_started(stack_settings, make_service) -> None:
    already = make_service("already")
    already.start()
    good, bad = make_service("good"), make_service("bad", mode="crash")
    stack, lines = stack_of(stack_settings, already, good, bad)
    with pytest.raises(StackError, match="exited while starting"):
        stack.up()
    assert not good.is_running() and not bad.is_running()
    assert already.is_running(), "a service this `up` did not start is left alone"
    assert any("stopping what this `up` started: good, bad" in line for line in lines), lines


def test_taken_port_stops_up_before_anything_starts(stack_settings, make_service) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        first, blocked = make_service("first"), make_service("blocked", ports=[port])
        stack, _ = stack_of(stack_settings, first, blocked)
        with pytest.raises(StackError) as info:
            stack.up()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "CHATSTREAM_BLOCKED_PORT" in message
    assert "docker compose -f docker-compose.kafka.yml up" in message
    assert "pid " in message  # names who holds it
    assert not first.is_running()


def test_missing_tools_are_all_named_before_anything_starts(stack_settings, make_service) -> None:
    tools = [Tool("no-such-tool-xyz", "testing", "apt-get install -y no-such-tool-xyz"),
             Tool("no-such-tool-abc", "testing", "apt-get install -y no-such-tool-abc")]
    ok, needy = make_service("ok"), make_service("needy", tools=tools)
    stack, _ = stack_of(stack_settings, ok, needy)
    with pytest.raises(StackError) as info:
        stack.up()
    assert "no-such-tool-xyz" in str(info.value) and "no-such-tool-abc" in str(info.value)
    assert "apt-get install -y no-such-tool-xyz" in str(info.value)
    assert not ok.is_running()


def test_single_service_up_and_down(stack_settings, make_service) -> None:
    a, b = make_service("a"), make_service("b")
    stack, lines = stack_of(stack_settings, a, b)
    stack.up(["b"])
    assert b.is_running() and not a.is_running()
    stack.up()
    assert [s.name for s in stack.down(["a"])] == ["a"]
    assert b.is_running()
    assert [s.name for s in stack.down()] == ["b"]
    assert any("a: not running" in line for line in lines)


def test_down_stops_in_reverse_order_and_keeps_data(stack_settings, make_service) -> None:
    a, b = make_service("a"), make_service("b")
    stack, lines = stack_of(stack_settings, a, b)
    stack.up()
    (a.data_dir / "kept").write_text("data")
    assert [s.name for s in stack.down()] == ["b", "a"]
    assert (a.data_dir / "kept").read_text() == "data"
    assert [row.state for row in stack.status()] == ["down", "down"]


def test_status_tells_a_foreign_listener_from_ours(stack_settings, make_service) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        service = make_service("x", ports=[squatter.getsockname()[1]])
        stack, _ = stack_of(stack_settings, service)
        (row,) = stack.status()
    assert row.state == "down" and "not by this stack" in row.detail


def test_unknown_service_name(stack_settings, make_service) -> None:
    stack, _ = stack_of(stack_settings, make_service("a"))
    with pytest.raises(StackError, match="unknown service nope; choose from a"):
        stack.up(["nope"])




def test_changed_ports_while_running_are_refused(stack_settings, make_service) -> None:
    """A server started on old ports must not be reported (or reused) as if it served the new ones."""
    old = make_service("svc", ports=[free_port()])
    Stack(stack_settings, out=lambda _l: None, services=[old]).up()
    moved = make_service("svc", ports=[free_port()])
    stack, _ = stack_of(stack_settings, moved)
    with pytest.raises(StackError, match="chatstream stack down svc"):
        stack.up()
    (row,) = stack.status()
    assert row.state == "moved" and "other ports" in row.detail
    assert old.is_running()


def test_concurrent_ups_start_one_server(stack_settings, make_service) -> None:
    """Two `up`s racing on one state folder: the second waits, then finds the service running."""
    import threading

    first, second = make_service("s", delay=1.0), make_service("s", delay=1.0)
    results: dict[str, list] = {}

    def run(key, service):
        results[key] = Stack(stack_settings, out=lambda _l: None, services=[service]).up()

    threads = [threading.Thread(target=run, args=(k, s)) for k, s in (("a", first), ("b", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(len(r) for r in results.values()) == [0, 1], results
    assert first.pid() == second.pid() is not None
