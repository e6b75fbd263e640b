"""The embedders' error, in a module of its own so ``embeddings`` and ``minilm`` import it without a cycle."""

from __future__ import annotations


class EmbeddingError(RuntimeError):
    """The embedder cannot run (missing model files, provider failure)."""


class EmbeddingUnavailable(EmbeddingError):
    """An embeddings API failed in a way worth retrying: rate limited (429), a 5xx, timed out or
    unreachable. ``transient`` makes ``processors.backoff.is_transient`` accept it; ``retry_after``
    is the server's own hint in seconds, when it gave one."""

    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
