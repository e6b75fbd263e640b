"""How the hybrid search is asked: the knobs that decide Weaviate's CPU per query at size.

Measured with ``chatstream bench --kb`` (see the README's retrieval-cost section): which properties
BM25 scores, how long a query BM25 sees, the fusion of the BM25 and vector rankings, and a bound on
the vector distance. The defaults are the cheapest profile that kept the labelled questions' ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class SearchProfile:
    query_properties: tuple[str, ...] = ("title^2", "text")
    fusion: Literal["relative", "ranked"] = "relative"
    max_vector_distance: float | None = None
    max_query_chars: int = 0  # BM25 sees at most this many characters of the query (0 = all)
    # > 0: vector search for this many candidates, BM25-reranked here (processors.bm25_rerank); 0 = Weaviate's hybrid
    vector_first: int = 0

    def bm25_query(self, query: str) -> str:
        """The query cut at a word boundary: BM25 cost grows with every term, the vector does not."""
        if self.max_query_chars <= 0 or len(query) <= self.max_query_chars:
            return query
        cut = query.rfind(" ", 0, self.max_query_chars + 1)
        return query[: cut if cut > 0 else self.max_query_chars]

    def hybrid_kwargs(self, query: str) -> dict[str, Any]:
        from weaviate.classes.query import HybridFusion

        kwargs: dict[str, Any] = {
            "query": self.bm25_query(query),
            "query_properties": list(self.query_properties),
            "fusion_type": HybridFusion.RANKED if self.fusion == "ranked" else HybridFusion.RELATIVE_SCORE,
        }
        if self.max_vector_distance is not None:
            kwargs["max_vector_distance"] = self.max_vector_distance
        return kwargs

    def describe(self) -> str:
        parts = [f"bm25 on {','.join(self.query_properties)}", f"fusion {self.fusion}"]
        if self.max_vector_distance is not None:
            parts.append(f"max_vector_distance {self.max_vector_distance:g}")
        if self.max_query_chars:
            parts.append(f"query <= {self.max_query_chars} chars")
        if self.vector_first:
            parts = [f"vector-first {self.vector_first} candidates, local bm25 rerank on {','.join(self.query_properties)}"]
        return ", ".join(parts)
