"""Client CPU per chat call: the openai SDK, the lean provider over httpx's transport and over aiohttp, in one run.

Why: the perf issue measured the SDK at 3.4-3.8 ms of client CPU per call against 0.7 ms on the
server; on a 2-core machine that CPU is taken from the pipeline. The scripted LLM runs in its own
process (its CPU is not counted); this process's CPU time (``time.process_time``, user + system, all
threads) is divided by the number of calls. Both clients run the same calls, alternating rounds, so
machine noise hits both alike.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from processors.generation.aiohttp_transport import AiohttpTransport
from processors.generation.http_provider import HttpxChatProvider
from processors.generation.openai_provider import OpenAIProvider
from streams.dev.llm_process import LLMServerProcess

MESSAGES = [
    {"role": "system", "content": "You are the support assistant."},
    {"role": "user", "content": "Passages:\n[kb-1] Reset your password in Settings > Security.\n\nQuestion: How?"},
]


async def _round(provider, calls: int, concurrency: int, stream: bool) -> tuple[float, float]:
    """(CPU ms per call, wall s) for ``calls`` calls with ``concurrency`` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            if stream:
                await provider.stream(MESSAGES, max_tokens=200, passages=[], on_delta=lambda t: None)
            else:
                await provider.complete(MESSAGES, max_tokens=200, passages=[])

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    return (time.process_time() - cpu) * 1000 / calls, time.perf_counter() - wall


async def _measure(base_url: str, calls: int, concurrency: int) -> dict[tuple[str, str], list[float]]:
    clients = {
        "openai SDK": OpenAIProvider(base_url=base_url, api_key="k", model="m", timeout_s=30),
        "httpx transport": HttpxChatProvider(base_url=base_url, api_key="k", model="m", timeout_s=30),
        "aiohttp transport": HttpxChatProvider(base_url=base_url, api_key="k", model="m", timeout_s=30,
                                               transport=AiohttpTransport()),
    }
    results: dict[tuple[str, str], list[float]] = {}
    for stream in (False, True):
        for provider in clients.values():  # warm up: connections, imports, first-call caches
            await _round(provider, 20, concurrency, stream)
        for _ in range(3):  # alternate, so noise falls on both
            for name, provider in clients.items():
                per_call, _ = await _round(provider, calls // 3, concurrency, stream)
                results.setdefault((name, "stream" if stream else "complete"), []).append(per_call)
    for provider in clients.values():
        await provider.aclose()
    return results


def main(calls: int, concurrency: int, tokens: int) -> int:
    with LLMServerProcess(0) as llm:
        httpx.post(f"{llm.base_url[:-3]}/_script", json={"tokens": tokens, "answer": "word " * 20}, timeout=10)
        results = asyncio.run(_measure(llm.base_url, calls, concurrency))
    print(f"client CPU per call, ms ({calls} calls per client and mode, {concurrency} in flight, "
          f"streamed answers of {tokens} tokens; 3 alternating rounds: median [min-max])")
    for mode in ("complete", "stream"):
        figures = {name: sorted(results[(name, mode)]) for name in ("openai SDK", "httpx transport", "aiohttp transport")}
        print(f"  {mode:8s}  " + "   ".join(f"{name} {v[1]:.2f} [{v[0]:.2f}-{v[-1]:.2f}]" for name, v in figures.items())
              + f"   SDK / aiohttp {figures['openai SDK'][1] / figures['aiohttp transport'][1]:.1f}x"
              + f"   httpx / aiohttp {figures['httpx transport'][1] / figures['aiohttp transport'][1]:.1f}x")
    return 0
