"""Port-taken detection, which decides whether `stack up` may start a service."""

from __future__ import annotations

import os
import socket

from stack.ports import Port, accepts_connections, port_in_use, who_listens


def test_a_listener_is_detected_and_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        assert accepts_connections("127.0.0.1", port)
        assert who_listens(port).startswith(f"pid {os.getpid()} (")
    assert not port_in_use("127.0.0.1", port)
    assert not accepts_connections("127.0.0.1", port)
    assert who_listens(port) is None


def test_a_wildcard_listener_blocks_loopback() -> None:
    """Weaviate's gRPC binds every interface: that must count as taken for 127.0.0.1 too."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        assert port_in_use("127.0.0.1", sock.getsockname()[1])


def test_closed_connections_do_not_block_a_restart() -> None:
    """After `down`, the old server's connections linger in TIME_WAIT; the port is still free to bind."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # server side closes first: its end goes to TIME_WAIT
        client.close()
    assert not port_in_use("127.0.0.1", port)


def test_port_names_its_setting() -> None:
    assert Port(9092, "broker listener", "kafka_port").env_var == "CHATSTREAM_KAFKA_PORT"
