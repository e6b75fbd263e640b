"""The scripted OpenAI-compatible server, driven through the real openai SDK and plain HTTP."""

import asyncio
import math
import time

import httpx
import openai
import pytest

from processors.generation.prompt import build_prompt
from processors.records import Passage
from streams.cli import build_parser
from streams.dev.llm_server import NO_PASSAGE_ANSWER, ScriptedLLMServer, grounded_answer, hash_embedding

PASSAGES = [
    Passage("kb-1", "kb-1#0", "Refunds", "kb/refunds.md", "Intro line here. Refunds take 14 days for annual plans.", 0.9),
    Passage("kb-2", "kb-2#0", "Invoices", "kb/invoices.md", "Invoices are emailed monthly. They are PDFs.", 0.5),
    Passage("kb-3", "kb-3#0", "Other", "kb/other.md", "Unrelated passage.", 0.1),
]
MESSAGES = build_prompt(
    system_prompt="Answer from the passages.", question="How long do refunds take?", passages=PASSAGES, budget_tokens=2000
).messages


@pytest.fixture
def server():
    with ScriptedLLMServer() as s:
        yield s


@pytest.fixture
def client(server):
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=5)


async def test_chat_completion_is_grounded_in_the_prompt(server, client):
    response = await client.chat.completions.create(model="any-model", messages=MESSAGES, max_tokens=200)
    text = response.choices[0].message.content
    assert text == "Refunds take 14 days for annual plans [kb-1]. Invoices are emailed monthly [kb-2]."
    assert response.model == "any-model" and response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens > 20 and response.usage.completion_tokens == math.ceil(len(text) / 4)
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


async def test_streaming_chunks_and_usage(server, client):
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    pieces, finish, usage = [], None, None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert len(pieces) > 5
    assert "".join(pieces) == "Refunds take 14 days for annual plans [kb-1]. Invoices are emailed monthly [kb-2]."
    assert finish == "stop" and usage.completion_tokens > 0
    assert server.stats()["by_outcome"] == {"ok_stream": 1}


async def test_max_tokens_cuts_with_finish_reason_length(server, client):
    response = await client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=3)
    assert response.choices[0].finish_reason == "length" and len(response.choices[0].message.content) <= 12


async def test_embeddings_float_and_base64_are_deterministic(server, client):
    a = await client.embeddings.create(model="e", input=["refund policy", "refund policies", "dark mode"], encoding_format="float")
    b = await client.embeddings.create(model="e", input="refund policy")  # SDK default: base64
    vectors = [d.embedding for d in a.data]
    assert len(vectors) == 3 and all(len(v) == 384 for v in vectors)
    assert b.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0)

    def cos(u, v):
        return sum(x * y for x, y in zip(u, v))

    assert cos(vectors[0], vectors[1]) > 0.99 > cos(vectors[0], vectors[2])
    small = await client.embeddings.create(model="e", input="x", dimensions=8, encoding_format="float")
    assert len(small.data[0].embedding) == 8
    assert hash_embedding("same", 16) == hash_embedding("same", 16)


async def test_embeddings_can_be_scripted_to_fail_alone(server, client):
    server.script(embeddings_fail_next=[{"status": 429, "retry_after": 2}, {"status": 503}])
    await client.chat.completions.create(model="m", messages=MESSAGES)  # chat is not affected
    with pytest.raises(openai.RateLimitError) as info:
        await client.embeddings.create(model="e", input="refund policy")
    assert info.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.APIStatusError) as info:
        await client.embeddings.create(model="e", input="refund policy")
    assert info.value.status_code == 503
    assert len((await client.embeddings.create(model="e", input="refund policy")).data) == 1
    stats = server.stats()
    assert stats["by_endpoint"] == {"chat": 1, "embeddings": 3} and stats["by_outcome"] == {"ok": 1, "429": 1, "503": 1}
    with pytest.raises(ValueError, match="does not hang"):
        server.script(embeddings_fail_next=[{"hang": True}])


async def test_models(server, client):
    models = await client.models.list()
    assert [m.id for m in models.data] == ["scripted-llm"]


async def test_scripted_failures_then_recovery_and_stats(server, client):
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.post("/_script", json={"fail_next": [{"status": 429, "retry_after": 1.5}, {"status": 500}]})
        assert r.status_code == 200 and r.json()["script"]["fail_next"] == 2
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="m", messages=MESSAGES)
        assert info.value.response.headers["retry-after"] == "1.5"
        assert info.value.body["type"] == "rate_limit_exceeded"
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="m", messages=MESSAGES)
        await client.chat.completions.create(model="m", messages=MESSAGES)
        await http.post("/_script", json={"mode": "503"})
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="m", messages=MESSAGES)
        assert info.value.status_code == 503
        stats = (await http.get("/_stats")).json()
        assert stats["by_outcome"] == {"429": 1, "500": 1, "ok": 1, "503": 1}
        assert stats["by_endpoint"] == {"chat": 4}
        await http.post("/_script", json={"mode": "ok", "reset_stats": True})
        assert (await http.get("/_stats")).json()["total"] == 0


async def test_latency_is_applied_and_requests_run_concurrently(server, client):
    server.script(latency_ms=300)
    started = time.monotonic()
    await asyncio.gather(*(client.chat.completions.create(model="m", messages=MESSAGES) for _ in range(20)))
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.5


async def test_hang_until_timeout_and_release(server, client):
    server.script(mode="hang")
    quick = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        await quick.chat.completions.create(model="m", messages=MESSAGES)
    for _ in range(30):  # the server notices the client gave up and stops holding the request
        if server.stats()["in_flight"] == 0:
            break
        await asyncio.sleep(0.1)
    assert server.stats()["in_flight"] == 0
    task = asyncio.create_task(client.chat.completions.create(model="m", messages=MESSAGES))
    await asyncio.sleep(0.2)
    assert server.stats()["in_flight"] >= 1 and not task.done()
    server.script(mode="ok", release=True)
    with pytest.raises(openai.APIStatusError) as info:  # a released hang ends with a 503
        await task
    assert info.value.status_code == 503
    await client.chat.completions.create(model="m", messages=MESSAGES)
    assert server.stats()["by_outcome"] == {"hang": 2, "ok": 1}


async def test_error_rate_is_seeded_and_roughly_right(server, client):
    server.script(error_rate=0.3, seed=42)
    failures = 0
    for _ in range(100):
        try:
            await client.chat.completions.create(model="m", messages=MESSAGES)
        except openai.InternalServerError:
            failures += 1
    assert 15 <= failures <= 45
    assert server.stats()["by_outcome"]["500"] == failures


async def test_fixed_answer_script(server, client):
    server.script(answer="Scripted reply.")
    response = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert response.choices[0].message.content == "Scripted reply."


async def test_bad_requests_get_clear_400s(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.post("/v1/chat/completions", content=b"not json")
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
        r = await http.post("/v1/chat/completions", json={"model": "m", "messages": []})
        assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
        r = await http.post("/v1/embeddings", json={"input": [1, 2]})
        assert r.status_code == 400
        for bad in ({"mode": "sometimes"}, {"error_rate": 2}, {"fail_next": [{"status": 200, "explode": 1}]}, {"nope": 1}):
            r = await http.post("/_script", json=bad)
            assert r.status_code == 400, bad
        assert (await http.get("/_stats")).json()["script"]["mode"] == "ok"  # nothing applied


def test_grounded_answer_without_passages():
    assert grounded_answer([{"role": "user", "content": "hello?"}]) == NO_PASSAGE_ANSWER


async def test_async_start_stop_and_two_servers_on_free_ports():
    a, b = ScriptedLLMServer(), ScriptedLLMServer()
    await a.start()
    await b.start()
    try:
        assert a.port != b.port and a.port > 0
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{a.base_url}/models")).status_code == 200
            assert (await http.get(f"{b.url}/health")).json() == {"status": "ok"}
    finally:
        await a.stop()
        await b.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{a.url}/health", timeout=1)


def test_cli_registers_the_command():
    args = build_parser().parse_args(
        ["dev", "llm-server", "--port", "0", "--latency-ms", "500", "--error-rate", "0.1", "--model", "m"]
    )
    assert (args.port, args.latency_ms, args.error_rate, args.model, args.host) == (0, 500.0, 0.1, "m", "127.0.0.1")
    assert args.handler.__name__ == "run_llm_server"


def test_cli_refuses_bad_values():
    from streams.cli import CommandError
    from streams.dev.commands import run_llm_server

    args = build_parser().parse_args(["dev", "llm-server", "--error-rate", "1.5"])
    with pytest.raises(CommandError, match="error_rate"):
        run_llm_server(args, None)
    args = build_parser().parse_args(["dev", "llm-server", "--port", "70000"])
    with pytest.raises(CommandError, match="port"):
        run_llm_server(args, None)


def test_cli_serves_until_terminated():
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "dev", "llm-server", "--port", str(port), "--model", "cli-model"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.1)
        assert models["data"][0]["id"] == "cli-model"
        r = httpx.post(f"http://127.0.0.1:{port}/_script", json={"fail_next": [{"status": 429, "retry_after": 2}]})
        assert r.status_code == 200
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/v1" in out
