"""`stack up` exposes nothing unauthenticated beyond loopback.

A private stack (its own state folder, every port free and different from the shared stack's) comes up
through the real `Stack.up`; then the kernel's own tables (/proc/net/tcp and tcp6) list every socket
the stack's processes listen on. Loopback listeners are fine. Any other listener must refuse a request
that carries no credentials: Weaviate's gRPC API and cluster data port, which v1.35 binds on all
interfaces, are checked with a real request each; an unknown non-loopback listener fails the test.
All test traffic goes to 127.0.0.1 (a wildcard listener answers there too).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import redis

from stack.manager import Stack
from stack.ports import port_in_use
from stack.secrets import REDIS_PASSWORD, WEAVIATE_API_KEY
from streams.config import Settings

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]

PORT_FIELDS = (
    "kafka_port", "kafka_controller_port", "redis_port",
    "weaviate_http_port", "weaviate_grpc_port", "weaviate_gossip_port", "weaviate_data_port",
    "weaviate_raft_port", "weaviate_raft_rpc_port",
    "jaeger_otlp_grpc_port", "jaeger_otlp_http_port", "jaeger_query_port", "jaeger_query_grpc_port",
)


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    pid: int
    service: str

    @property
    def loopback(self) -> bool:
        address = ipaddress.ip_address(self.address)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback


FIRST_PORT = 21500  # a range of its own, away from the shared stack's and the fault stack's ports


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    candidate = FIRST_PORT
    while len(ports) < count:
        if not port_in_use("127.0.0.1", candidate):  # a wildcard listener makes this bind fail too
            ports.append(candidate)
        candidate += 1
    return ports


@pytest.fixture(scope="module")
def locked_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = dict(zip(PORT_FIELDS, _distinct_free_ports(len(PORT_FIELDS)), strict=True))
    home = tmp_path_factory.mktemp("lockdown") / ".chatstream"
    settings = Settings(
        home=home,
        **ports,
        kafka_bootstrap=f"127.0.0.1:{ports['kafka_port']}",
        redis_url=f"redis://127.0.0.1:{ports['redis_port']}/0",
        jaeger_query_url=f"http://127.0.0.1:{ports['jaeger_query_port']}",
        otlp_endpoint="",
        kafka_heap="256m",
    )
    stack = Stack(settings, out=lambda line: print(f"[stack] {line}"))
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def stack_ready(locked_stack: Stack) -> Settings:
    """This module needs its own stack only, not the shared one the root conftest checks."""
    return locked_stack.settings


def _listening_sockets() -> dict[str, tuple[str, int]]:
    """socket inode -> (local address, port) of every TCP listener on this machine."""
    out: dict[str, tuple[str, int]] = {}
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_address, hex_port = fields[1].rsplit(":", 1)
            raw = bytes.fromhex(hex_address)
            # /proc prints the address as 32-bit words in host (little-endian) order
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
            address = socket.inet_ntop(socket.AF_INET if width == 4 else socket.AF_INET6, packed)
            out[fields[9]] = (address, int(hex_port, 16))
    return out


def _session_pids(leader: int) -> list[int]:
    """Every process in the session `stack up` started for a service (wrapper scripts exec or fork)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == leader:  # field 6 of /proc/pid/stat: session id
            pids.append(int(entry.name))
    return pids


def stack_listeners(stack: Stack) -> list[Listener]:
    sockets = _listening_sockets()
    found: list[Listener] = []
    for service in stack.services:
        leader = service.pid()
        assert leader is not None, f"{service.name} is not running"
        for pid in _session_pids(leader):
            try:
                fds = list(Path(f"/proc/{pid}/fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:[") and (inode := target[8:-1]) in sockets:
                    address, port = sockets[inode]
                    found.append(Listener(address, port, pid, service.name))
    return sorted(set(found), key=lambda item: (item.service, item.port))


def _grpc_search(port: int, key: str | None) -> tuple[grpc.StatusCode, str]:
    """A real API call: a gRPC search on a made-up collection; its status code and message."""
    metadata = (("authorization", f"Bearer {key}"),) if key else None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        search = channel.unary_unary(
            "/weaviate.v1.Weaviate/Search", request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw
        )
        try:
            search(b"\x0a\x07Article", timeout=5.0, metadata=metadata)  # SearchRequest{collection: "Article"}
        except grpc.RpcError as exc:
            return exc.code(), str(exc.details())
    return grpc.StatusCode.OK, ""


def _refuses_grpc_without_key(settings: Settings, port: int) -> str:
    """Weaviate answers UNKNOWN "extract auth: unauthorized" (not UNAUTHENTICATED) without a valid key."""
    code, details = _grpc_search(port, None)
    assert code != grpc.StatusCode.OK and "unauthorized" in details, f"gRPC {port} without a key: {code.name} {details}"
    code_wrong, details_wrong = _grpc_search(port, "wrong-key")
    assert "unauthorized" in details_wrong, f"gRPC {port} with a wrong key: {code_wrong.name} {details_wrong}"
    # the same call with the key gets past authentication (it fails only on the missing collection)
    _, with_key = _grpc_search(port, settings.stack_secret(WEAVIATE_API_KEY))
    assert "unauthorized" not in with_key, with_key
    return f"{code.name}: {details}"


def _refuses_http_without_credentials(settings: Settings, port: int) -> str:
    response = httpx.get(f"http://127.0.0.1:{port}/indices/Article/shards/x/objects/_digest", timeout=5.0)
    assert response.status_code == 401, f"port {port} answered {response.status_code} without credentials"
    return "401"


GUARDED: dict[str, Callable[[Settings, int], str]] = {
    "weaviate_grpc_port": _refuses_grpc_without_key,
    "weaviate_data_port": _refuses_http_without_credentials,
}


def test_every_listener_is_loopback_or_refuses_anonymous_requests(locked_stack: Stack) -> None:
    settings = locked_stack.settings
    listeners = stack_listeners(locked_stack)
    for listener in listeners:
        print(f"{listener.service:<9} {listener.address}:{listener.port} (pid {listener.pid})")
    seen_ports = {listener.port for listener in listeners}
    # not vacuous: the sockets of every service's client-facing port were found
    for field in ("kafka_port", "redis_port", "weaviate_http_port", "weaviate_grpc_port", "jaeger_otlp_grpc_port"):
        assert getattr(settings, field) in seen_ports, f"{field} not among the listeners found"

    guarded_ports = {getattr(settings, field): check for field, check in GUARDED.items()}
    exposed = [listener for listener in listeners if not listener.loopback]
    unguarded = [listener for listener in exposed if listener.port not in guarded_ports]
    assert not unguarded, f"listeners beyond loopback with no credential check: {unguarded}"
    for listener in exposed:
        verdict = guarded_ports[listener.port](settings, listener.port)
        print(f"  {listener.address}:{listener.port} without credentials: {verdict}")


def test_weaviate_refuses_requests_without_the_key(locked_stack: Stack) -> None:
    settings = locked_stack.settings
    key = settings.stack_secret(WEAVIATE_API_KEY)
    assert key and settings.secret_path(WEAVIATE_API_KEY).stat().st_mode & 0o077 == 0
    base = f"http://127.0.0.1:{settings.weaviate_http_port}"
    assert httpx.get(f"{base}/v1/schema", timeout=5).status_code == 401
    assert httpx.get(f"{base}/v1/schema", headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    assert httpx.get(f"{base}/v1/schema", headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code == 200
    _refuses_grpc_without_key(settings, settings.weaviate_grpc_port)


async def test_our_clients_use_the_generated_credentials(locked_stack: Stack) -> None:
    """The vector store and the Redis URL the stages use carry the keys `stack up` generated."""
    from processors.vectorstore import build_store

    settings = locked_stack.settings.derive(collection="LockdownProbe")
    store = build_store(settings)
    try:
        await store.ensure_collection("lockdown")
        assert await store.stored_chunks("lockdown") == {}
        await store.drop_tenant("lockdown")
    finally:
        await store.close()

    anonymous = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    assert settings.stack_secret(REDIS_PASSWORD) in settings.redis_connection_url
    client = redis.Redis.from_url(settings.redis_connection_url, socket_timeout=5)
    assert client.ping()
    client.close()
