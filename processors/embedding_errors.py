"""The embedders' error, in a module of its own so ``embeddings`` and ``minilm`` import it without a cycle."""

from __future__ import annotations


class EmbeddingError(RuntimeError):
    """The embedder cannot run (missing model files, provider failure)."""
