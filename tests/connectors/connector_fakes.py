"""Fakes and helpers shared by the connector tests (unit tests need no services).

Imported by name: pytest puts this folder on sys.path for the test modules next to it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

from streams.config import Settings
from streams.producer import ProduceError


class FakeProducer:
    """Records what would have been produced; answers like Kafka acknowledged it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, topic: str, value: bytes | None, *, key: Any = None, headers: Any = None, partition=None):
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": list(headers or [])})
        return (0, len(self.sent) - 1)

    async def close(self, timeout_s: float = 0) -> None:
        pass


class FailingProducer(FakeProducer):
    """Kafka refusing every record (what ``AsyncProducer`` raises after its delivery timeout)."""

    async def send(self, topic, value, *, key=None, headers=None, partition=None):
        raise ProduceError(f"{topic}: Local: Message timed out")


class HangingProducer(FakeProducer):
    async def send(self, topic, value, *, key=None, headers=None, partition=None):
        await asyncio.sleep(3600)


class FakeRedis:
    """The few redis.asyncio calls the connectors use, in memory."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def exists(self, key: str) -> int:
        return int(key in self.data)

    async def set(self, key: str, value: Any, nx: bool = False, ex: int | None = None):
        if nx and key in self.data:
            return None
        self.data[key] = value.encode() if isinstance(value, str) else value
        return True

    async def get(self, key: str):
        return self.data.get(key)

    async def delete(self, *keys: str) -> int:
        return sum(1 for key in keys if self.data.pop(key, None) is not None)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return dict(self.data.get(key) or {})

    async def hset(self, key: str, mapping: dict[str, Any]) -> int:
        fields = self.data.setdefault(key, {})
        fields.update({k.encode(): str(v).encode() for k, v in mapping.items()})
        return len(mapping)

    async def expire(self, key: str, seconds: Any) -> bool:
        return key in self.data

    def lock(self, name: str, timeout: float | None = None, sleep: float = 0.1,
             blocking_timeout: float | None = None, **_: Any) -> "FakeLock":
        return FakeLock(self, name, sleep, blocking_timeout)

    async def aclose(self) -> None:
        pass


class FakeLock:
    """redis-py's ``Lock`` as the connectors use it (acquire, reacquire, release), held in a ``FakeRedis`` (no expiry)."""

    def __init__(self, redis: FakeRedis, name: str, sleep: float, blocking_timeout: float | None) -> None:
        self.redis, self.name, self.sleep, self.blocking_timeout = redis, name, sleep, blocking_timeout
        self.token: object | None = None

    async def acquire(self) -> bool:
        loop = asyncio.get_running_loop()
        give_up = None if self.blocking_timeout is None else loop.time() + self.blocking_timeout
        while self.name in self.redis.data:
            if give_up is not None and loop.time() > give_up:
                return False
            await asyncio.sleep(self.sleep)
        self.token = object()
        self.redis.data[self.name] = self.token
        return True

    async def reacquire(self) -> bool:
        if self.token is None or self.redis.data.get(self.name) is not self.token:
            from redis.exceptions import LockNotOwnedError

            raise LockNotOwnedError("Cannot reacquire a lock that's no longer owned")
        return True

    async def release(self) -> None:
        if self.token is None or self.redis.data.get(self.name) is not self.token:
            from redis.exceptions import LockNotOwnedError

            raise LockNotOwnedError("Cannot release a lock that's no longer owned")
        del self.redis.data[self.name]
        self.token = None


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"otlp_endpoint": None, "gateway_sse_enabled": False}
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def fake_producer() -> FakeProducer:
    return FakeProducer()


class Recorder:
    """A local HTTP server standing in for a channel or ticketing API; it records what it receives.

    ``script`` is a list of (status, headers, body) answered in order, the last one repeating.
    """

    def __init__(self, script: list[tuple[int, dict[str, str], Any]] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []  # monotonic arrival time of each request
        self.script = script or [(200, {}, {"ok": True})]
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                with recorder.lock:
                    import time as _time

                    recorder.times.append(_time.monotonic())
                    i = len(recorder.requests)
                    try:
                        body = json.loads(raw) if raw else None
                    except ValueError:
                        body = raw.decode("utf-8", "replace")
                    recorder.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body, "method": self.command}
                    )
                    status, headers, answer = recorder.script[min(i, len(recorder.script) - 1)]
                    if callable(answer):
                        answer = answer(recorder.requests[-1])
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_PUT = do_POST  # noqa: N815 (Bot Framework updates an activity with PUT)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SlackFake:
    """Slack's Web API as deliver uses it: chat.postMessage keeps each message (with its metadata), and
    conversations.history / conversations.replies list them back like Slack does (newest first, metadata
    only with ``include_all_metadata``, ``oldest`` and ``limit`` honoured, cursor paging).

    ``accept_then_fail`` makes the next N posts be stored and then answered with a dropped connection,
    as when deliver dies right after Slack accepted the message. chat.update edits a kept message in
    place (text, and metadata when given) and is recorded in ``edits`` in the order it took effect.
    """

    def __init__(self) -> None:
        import time as _time
        from urllib.parse import parse_qs, urlsplit

        self.messages: list[dict[str, Any]] = []  # {"channel", "ts", "thread_ts", "text", "metadata"}
        self.posts = 0
        self.lookups: list[str] = []
        self.edits: list[tuple[str, str]] = []  # (ts, text) of each chat.update
        self.accept_then_fail = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, data: dict[str, Any]) -> None:
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw)
                    body["channel"]
                except (ValueError, KeyError, TypeError):  # cut off: the sender died mid-request
                    self._answer({"ok": False, "error": "invalid_arguments"})
                    return
                if self.path.endswith("/chat.update"):
                    with fake.lock:
                        found = [m for m in fake.messages if m["channel"] == body["channel"] and m["ts"] == body.get("ts")]
                        for m in found:
                            m["text"] = body.get("text", "")
                            m["metadata"] = body.get("metadata") or m["metadata"]
                            fake.edits.append((m["ts"], m["text"]))
                    self._answer({"ok": True, "channel": body["channel"], "ts": body["ts"]} if found
                                 else {"ok": False, "error": "message_not_found"})
                    return
                with fake.lock:
                    fake.posts += 1
                    ts = f"{_time.time():.6f}"
                    while any(m["ts"] == ts for m in fake.messages):
                        ts = f"{float(ts) + 0.000001:.6f}"
                    fake.messages.append({"channel": body["channel"], "ts": ts, "thread_ts": body.get("thread_ts"),
                                          "text": body.get("text", ""), "metadata": body.get("metadata")})
                    drop = fake.accept_then_fail > 0
                    if drop:
                        fake.accept_then_fail -= 1
                if drop:  # accepted, but the answer never reaches deliver
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self._answer({"ok": True, "channel": body["channel"], "ts": ts})

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                method = url.path.rsplit("/", 1)[-1]
                with fake.lock:
                    fake.lookups.append(method)
                    found = [m for m in fake.messages if m["channel"] == q.get("channel")
                             and float(m["ts"]) > float(q.get("oldest", "0"))]
                if method == "conversations.replies":
                    found = [m for m in found if m["thread_ts"] == q.get("ts")]
                elif method != "conversations.history":
                    self._answer({"ok": False, "error": "unknown_method"})
                    return
                found.sort(key=lambda m: float(m["ts"]), reverse=True)
                start = int(q.get("cursor") or 0)
                limit = int(q.get("limit", 100))
                page = found[start : start + limit]
                with_meta = q.get("include_all_metadata") == "true"
                out = [{"ts": m["ts"], "text": m["text"], **({"metadata": m["metadata"]} if with_meta and m["metadata"] else {})}
                       for m in page]
                more = start + limit < len(found)
                self._answer({"ok": True, "messages": out, "has_more": more,
                              "response_metadata": {"next_cursor": str(start + limit) if more else ""}})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def replies_to(self, message_id: str) -> int:
        with self.lock:
            return sum(1 for m in self.messages
                       if ((m["metadata"] or {}).get("event_payload") or {}).get("message_id") == message_id)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack_fake():
    fake = SlackFake()
    yield fake
    fake.close()


@pytest.fixture
def recorder_factory():
    made: list[Recorder] = []

    def make(script=None) -> Recorder:
        r = Recorder(script)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


class FakeMessage:
    """The parts of a confluent_kafka.Message the connectors read."""

    def __init__(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int = 0,
                 offset: int = 0, headers: list | None = None) -> None:
        self._t, self._v, self._k, self._p, self._o, self._h = topic, value, key, partition, offset, headers or []

    def topic(self): return self._t
    def value(self): return self._v
    def key(self): return self._k
    def partition(self): return self._p
    def offset(self): return self._o
    def headers(self): return self._h
    def error(self): return None


async def no_sleep(_: float) -> None:
    return None


Sleeper = Callable[[float], Any]


class ServedApp:
    """An ASGI app under a real uvicorn on a free port, in a thread (SSE needs real streaming).

    With ``gateway_settings`` it is served as `chatstream gateway` serves it (read deadlines, limits).
    """

    def __init__(self, app: Any, gateway_settings: Any = None) -> None:
        import socket

        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        if gateway_settings is not None:
            from connectors.gateway.serving import uvicorn_config

            config, self.deadlines = uvicorn_config(app, gateway_settings, "127.0.0.1", self.port,
                                                    stats=app.state.gateway.stats, log_level="warning", lifespan="on")
        else:
            config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.serve())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        import time as _time

        deadline = _time.monotonic() + 20
        while not self.server.started:
            if _time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            _time.sleep(0.02)

    def server_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def serve():
    served: list[ServedApp] = []

    def start(app: Any, gateway_settings: Any = None) -> ServedApp:
        s = ServedApp(app, gateway_settings)
        served.append(s)
        return s

    yield start
    for s in served:
        s.close()
