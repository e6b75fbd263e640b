"""The gateway's connection limits under a real uvicorn, served as `chatstream gateway` serves it.

Slow and idle connections are closed after ``gateway_read_timeout_s``; an SSE stream that outlives
that timeout many times over keeps receiving its events; the connection cap and the head size limit
reach uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
from connector_fakes import FakeProducer, settings

from connectors.gateway.app import create_app
from connectors.gateway.sse import Hub
from processors.records import ChatDelta, ChatRequest, ChatResponse, Status

KEYS = {"key-acme": "acme"}
READ_TIMEOUT_S = 0.5
CLOSED_WITHIN_S = 10 * READ_TIMEOUT_S  # generous on a shared machine; without a deadline it never closes


def gateway(serve, hub=None, **overrides):
    s = settings(**{"gateway_api_keys": KEYS, "gateway_read_timeout_s": READ_TIMEOUT_S, "gateway_keep_alive_s": 30,
                    **overrides})
    return serve(create_app(s, FakeProducer(), hub=hub, sse_tail=False), gateway_settings=s)


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection (raises TimeoutError if it never does)."""
    return await asyncio.wait_for(reader.read(), CLOSED_WITHIN_S)


async def test_half_a_request_head_then_silence_is_disconnected(serve):
    served = gateway(serve)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    await writer.drain()
    started = time.monotonic()
    assert await closed_by_server(reader) == b""
    assert time.monotonic() - started >= READ_TIMEOUT_S * 0.9
    writer.close()
    async with httpx.AsyncClient(base_url=served.url, timeout=5) as client:
        assert (await client.get("/v1/stats")).json()["counters"]["connections.closed_slow"] == 1


async def test_a_connection_that_never_sends_is_disconnected(serve):
    served = gateway(serve)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    assert await closed_by_server(reader) == b""
    writer.close()


async def test_a_trickled_body_is_disconnected(serve):
    served = gateway(serve)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: key-acme\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    await writer.drain()
    closed = asyncio.ensure_future(closed_by_server(reader))
    try:
        while not closed.done():  # one byte every 50 ms: the body would take 50 s
            writer.write(b" ")
            await writer.drain()
            await asyncio.wait([closed], timeout=0.05)
    except OSError:  # the server closed while we were writing
        pass
    assert await closed == b""
    writer.close()


async def test_a_keep_alive_connection_gets_the_deadline_again_after_its_response(serve):
    served = gateway(serve)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 200")
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # keep-alive is 30 s here
    await writer.drain()
    rest = await closed_by_server(reader)
    assert b'"ok":true' in rest and rest.count(b"HTTP/1.1") == 0  # the first body only, no second answer
    writer.close()


def test_an_sse_stream_far_longer_than_the_read_timeout_keeps_receiving(serve):
    hub = Hub()
    served = gateway(serve, hub=hub, gateway_sse_keepalive_s=60)
    pieces = [f"piece {i} " for i in range(8)]
    gap_s = READ_TIMEOUT_S * 0.6  # 8 pieces: the stream lasts ~5 read timeouts, silent from the client
    with httpx.Client(base_url=served.url, timeout=10) as client:
        data = client.post("/v1/messages", json={"text": "hi", "session_id": "s1"}, headers={"X-API-Key": "key-acme"}).json()
        sid, mid = data["session_id"], data["message_id"]
        req = ChatRequest(mid, sid, "u", "web", "hi", 0)
        loop = served.server_loop()

        def publish() -> None:
            for seq, piece in enumerate(pieces):
                time.sleep(gap_s)  # the events are paced in time: that is what is being tested
                loop.call_soon_threadsafe(hub.publish_delta, ChatDelta(mid, sid, "web", seq, piece))
            time.sleep(gap_s)
            loop.call_soon_threadsafe(hub.publish, ChatResponse.for_request(req, "".join(pieces), Status.ANSWERED))

        events = []
        started = time.monotonic()
        with client.stream("GET", f"/v1/sessions/{sid}/events?token={data['stream_token']}") as stream:
            threading.Thread(target=publish, daemon=True).start()
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
                    if kind == "reply":
                        break
        lasted = time.monotonic() - started
        assert client.get("/healthz").status_code == 200
    assert [e["text"] for k, e in events if k == "delta"] == pieces
    assert events[-1][0] == "reply" and events[-1][1]["text"] == "".join(pieces)
    assert lasted > 4 * READ_TIMEOUT_S
    assert served.deadlines.closed_slow == 0


async def test_requests_beyond_the_connection_cap_get_503(serve):
    served = gateway(serve, gateway_max_connections=3, gateway_read_timeout_s=30)
    held = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(3)]
    async with httpx.AsyncClient(base_url=served.url, timeout=5) as client:
        assert (await client.get("/healthz")).status_code == 503
        for _, writer in held:
            writer.close()
        deadline = time.monotonic() + 10
        while (status := (await client.get("/healthz")).status_code) == 503 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # until the server has seen the held connections close
        assert status == 200


async def test_an_unfinished_request_head_over_the_limit_is_refused(serve):
    """h11's limit bounds what a connection may buffer before its head is complete (a slowloris's memory)."""
    served = gateway(serve, gateway_max_header_bytes=2048, gateway_read_timeout_s=30)
    async with httpx.AsyncClient(base_url=served.url, timeout=5) as client:
        assert (await client.get("/healthz", headers={"X-Pad": "a" * 1000})).status_code == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 4000)
    await writer.drain()
    answer = await closed_by_server(reader)
    assert answer.startswith(b"HTTP/1.1 400")
    writer.close()
