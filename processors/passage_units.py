"""A passage's units (its title and sentences) and their vectors, computed once at ingest.

The relevance meter matches a question against each unit of the best passages. Embedding those
units when a turn first retrieves a passage put up to 32 texts on the worker's one ONNX thread in
the middle of the turn: measured on the demo help center, a 12-sentence batch took 358 ms and every
turn behind it waited (the half-load bench's p99), and a fresh worker paid it for every passage it
had not yet seen, a cost that grows with the knowledge base. Ingest already embeds every chunk, so
it embeds the chunk's units too and stores them beside it (``WeaviateStore``: a collection of their
own, so the hybrid search never reads them); the meter reads a chunk's stored units the first time
a turn brings it (one small fetch) and embeds at query time only what was stored without them (a
knowledge base ingested before this existed, or by another model).

Stored as float16, half the bytes of float32: measured with the MiniLM model on 263 units of the
demo help center and five questions, the cosine moves by at most 4.0e-5 (relevance is kept to six
decimals). A key names the model and the exact unit texts, so vectors of another model or of
differently split text are never used.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from processors.generation.text import split_sentences

MAX_UNITS_PER_PASSAGE = 16


def passage_units(title: str, text: str) -> list[str]:
    """The pieces a question is matched against: the title and each sentence."""
    units = [title.strip()] if title.strip() else []
    units += [s for s in split_sentences(text) if s.strip()]
    return units[:MAX_UNITS_PER_PASSAGE] or [text[:400]]


def units_key(model: str, units: Sequence[str]) -> str:
    """Names the vector space and the exact texts: a stored matrix is used only under the same key."""
    digest = hashlib.sha256("\x1f".join(units).encode("utf-8")).hexdigest()[:20]
    return f"{model}#{len(units)}#{digest}"


@dataclass(frozen=True)
class UnitVectors:
    """The stored vectors of a passage's units, one row per unit, and the key they were made under."""

    key: str
    matrix: np.ndarray

    def usable_for(self, model: str, units: Sequence[str]) -> bool:
        return self.key == units_key(model, units) and self.matrix.shape[0] == len(units)


def encode_matrix(vectors: Sequence[Sequence[float]] | np.ndarray) -> str:
    """Rows as little-endian float16, base64 (Weaviate's blob type)."""
    return base64.b64encode(np.asarray(vectors, dtype="<f2").tobytes()).decode("ascii")


def decode_matrix(blob: str | bytes, rows: int) -> np.ndarray:
    """The float32 matrix ``encode_matrix`` wrote; raises ValueError when the size does not fit ``rows``."""
    raw = base64.b64decode(blob) if isinstance(blob, str) else bytes(blob)
    values = np.frombuffer(raw, dtype="<f2")
    if rows < 1 or values.size % rows:
        raise ValueError(f"{values.size} values do not make {rows} rows")
    return values.reshape(rows, -1).astype(np.float32)


def stored_units(key: object, blob: object) -> UnitVectors | None:
    """A chunk's stored units from their key and blob, or None when it has none (or they cannot be read)."""
    if not key or not blob or not isinstance(key, str) or not isinstance(blob, (str, bytes)):
        return None
    try:
        rows = int(key.split("#")[-2])
        return UnitVectors(key, decode_matrix(blob, rows))
    except (ValueError, IndexError):
        return None
