"""Embedding a whole corpus: every core busy, batches grouped by length, results as they finish.

Query-time embedding (``processors.minilm``) merges concurrent questions into one ONNX run on one
thread, which suits many short texts arriving together. Ingestion is the opposite case: thousands
of long chunks known up front. Measured on the 2-core machine with the int8 MiniLM, CPU per text
*grows* with the batch size (about 30 ms per 100-token chunk at batch 1-8, 52 ms at 64) and ONNX
intra-op threads spin against each other when the machine is busy. So ingestion runs small batches
of similar length (little padding) on one thread per core, each with one intra-op thread; ONNX
``run`` releases the GIL, so the threads really run in parallel without a process per core.

An embedder without a blocking entry point (an OpenAI-compatible API) gets the same batching with
``concurrency`` requests in flight instead of threads; its client retries transient failures.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from processors.embeddings import Embedder, blocking_entry


def length_grouped(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Indices of ``texts`` in batches of similar length (shortest first), so padding stays small.

    Character length is a close enough proxy for token length and costs nothing to compute.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class BulkEmbedder:
    """Embeds many texts with ``workers`` batches in flight; yields (indices, vectors) as each finishes."""

    def __init__(self, embedder: Embedder, *, workers: int | None = None, batch_size: int | None = None) -> None:
        self.embedder = embedder
        self._blocking: Callable[[list[str]], object] | None = blocking_entry(embedder)
        self.workers = max(1, workers or (os.cpu_count() or 1))
        # small batches for the local model (see the module doc); larger ones per API request
        self.batch_size = batch_size or (8 if self._blocking is not None else 64)
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    async def embed(self, texts: Sequence[str]) -> AsyncIterator[tuple[list[int], list[list[float]]]]:
        """Every text's vector, batch by batch in completion order (not input order)."""
        batches = length_grouped(texts, self.batch_size)
        if not batches:
            return
        executor = ThreadPoolExecutor(self.workers, thread_name_prefix="bulk-embed") if self._blocking else None
        loop = asyncio.get_running_loop()

        async def run(indices: list[int]) -> tuple[list[int], list[list[float]]]:
            batch = [texts[i] for i in indices]
            if executor is not None and self._blocking is not None:
                vectors = await loop.run_in_executor(executor, self._blocking, batch)
                return indices, vectors.tolist()  # type: ignore[attr-defined]
            return indices, await self.embedder.embed(batch)

        pending: set[asyncio.Task[tuple[list[int], list[list[float]]]]] = set()
        queue = iter(batches)
        try:
            # one batch queued behind each running one keeps every worker fed while results are written
            for indices in queue:
                pending.add(asyncio.ensure_future(run(indices)))
                if len(pending) >= 2 * self.workers:
                    break
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    yield task.result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending.add(asyncio.ensure_future(run(nxt)))
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)

