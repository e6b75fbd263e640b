"""Absolute relevance: does the knowledge base cover a question at all?

Weaviate's hybrid search fuses BM25 and vector scores with ``relativeScoreFusion``, which rescales
both per query, so the best hit scores near 1.0 whether or not it answers the question (see the
field notes). Ranking needs only relative scores; deciding "we do not know this" needs signals that
mean the same thing for every query:

- ``Passage.relevance``: the raw cosine similarity of the query embedding and the passage's closest
  unit (its title or one of its sentences). Whole chunks dilute a short question's match ("is there
  an iPhone app" against an 800-character chunk about the mobile app in general); a question usually
  matches one sentence. Ingest stores the units' vectors with the chunk (``processors.passage_units``);
  units stored without them are embedded with the retriever's embedder, once per process.
- coverage: the share of the query's content words that occur in the retrieved passages, a raw
  lexical signal (BM25-like, no per-query normalisation). Unanswerable questions near the help
  center's topics ("is there time tracking on tasks") match semantically but name a thing it never
  mentions. Users' spelling is forgiven where it is safe: a one-letter typo in a long word
  ("referal"), inflections the fold misses ("logged"/"log", "lost"/"lose"), and acronyms ("IP").

``answer_score`` = the best, over the passages, of ``relevance + LEXICAL_WEIGHT * coverage``; a turn below the threshold
(``Settings.answerability_min_relevance``) is not covered; a follow-up is judged by ``turn_score``.
Weight and threshold were chosen on the fit part of the labelled set (``streams/demo/labels.jsonl``,
``chatstream eval calibrate``, ``streams/evaluation/split.py``; the tables are in the issue-10 notes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache

import numpy as np

from processors.generation.text import STOPWORDS, content_words, words
from processors.passage_units import UnitVectors, passage_units
from processors.records import Passage
from processors.spelling import corrected, text_words
from processors.tenant_model import model_id

LEXICAL_WEIGHT = 0.6
MEASURED_PASSAGES = 2  # the hybrid ranking's best two: measuring more changed no decision on the labelled set
# chunk ids and tenant -> the stored unit vectors of those it has (``VectorStore.unit_vectors``)
StoredUnits = Callable[..., Awaitable[dict[str, UnitVectors]]]

log = logging.getLogger(__name__)


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine of two vectors (0.0 when either is empty or zero)."""
    if not len(a) or not len(b) or len(a) != len(b):
        return 0.0
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return dot / (na * nb)


class RelevanceMeter:
    """Measures ``Passage.relevance`` with the retriever's embedder; unit vectors are kept by text.

    Units are first read from what ingest stored with the chunk (``stored``, one store call for the
    chunks a turn brings that this process has not seen), then kept here. Units stored without
    vectors, or under another model, are embedded once: kept in a bounded map, and concurrent turns
    that need the same sentence while it is being embedded wait for that one computation instead of
    embedding it again (on a cold start a burst of turns would otherwise embed the same sentences
    many times over).
    """

    def __init__(self, embedder, max_units: int = 50_000, stored: StoredUnits | None = None) -> None:  # type: ignore[no-untyped-def]
        self.embedder = embedder
        self.stored = stored
        self.model = model_id(embedder)
        self.max_units = max_units
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pending: dict[str, asyncio.Future] = {}
        self._read_failed = False

    async def _unit_vectors(self, texts: list[str]) -> list[np.ndarray]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors and t not in self._pending]
        if missing:
            loop = asyncio.get_running_loop()
            futures = {t: loop.create_future() for t in missing}
            self._pending.update(futures)
            try:
                vectors = await self.embedder.embed(missing)
                self._keep(missing, [np.asarray(v, dtype=np.float32) for v in vectors])
                for text in missing:
                    futures[text].set_result(None)
            except BaseException as exc:
                for future in futures.values():
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # retrieved: waiters re-raise it, nobody else needs to
                raise
            finally:
                for text in missing:
                    self._pending.pop(text, None)
        for text in texts:
            pending = self._pending.get(text)
            if pending is not None and text not in self._vectors:
                await asyncio.shield(pending)
        return [self._vectors[t] for t in texts]

    async def measure(
        self, query_vector: Sequence[float], passages: Sequence[Passage], limit: int = MEASURED_PASSAGES,
        *, tenant: str | None = None,
    ) -> list[Passage]:
        """The first ``limit`` passages with ``relevance`` = cosine of the query and their closest unit;
        the rest are returned as they are (unmeasured). With ``tenant``, units this process has not
        seen are first read from what ingest stored."""
        if not passages:
            return []
        rest = list(passages[limit:])
        passages = passages[:limit]
        units = [passage_units(p.title, p.text) for p in passages]
        if tenant is not None and self.stored is not None:
            await self._read_stored(tenant, [(p.chunk_id, group) for p, group in zip(passages, units)])
        matrix = np.stack(await self._unit_vectors([u for group in units for u in group]))
        query = np.asarray(query_vector, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(query) or 1.0)
        sims = (matrix @ query) / np.where(norms == 0, 1.0, norms)
        out, start = [], 0
        for passage, group in zip(passages, units):
            best = float(sims[start : start + len(group)].max())
            start += len(group)
            out.append(dataclasses.replace(passage, relevance=round(best, 6)))
        return out + rest

    async def _read_stored(self, tenant: str, groups: list[tuple[str, list[str]]]) -> None:
        """Keep the stored vectors of the chunks with a unit not yet known here (one store call); a
        chunk stored without them, or under another model, is left to the embedder, as is everything
        when the store cannot answer (relevance is then only slower, not wrong)."""
        wanted = [(cid, group) for cid, group in groups
                  if any(u not in self._vectors and u not in self._pending for u in group)]
        if not wanted:
            return
        try:
            found = await self.stored([cid for cid, _ in wanted], tenant=tenant)  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - see docstring
            # once loudly (e.g. a knowledge base ingested before units were stored: ingest it again)
            log.log(logging.DEBUG if self._read_failed else logging.WARNING,
                    "stored unit vectors not read (%s); embedding them", exc)
            self._read_failed = True
            return
        for cid, group in wanted:
            units = found.get(cid)
            if units is not None and units.usable_for(self.model, group):
                self._keep(group, units.matrix)

    def _keep(self, texts: Sequence[str], vectors: Sequence[np.ndarray]) -> None:
        for text, vector in zip(texts, vectors):
            self._vectors[text] = vector
        while len(self._vectors) > self.max_units:
            self._vectors.popitem(last=False)


async def measure(embedder, query_vector: Sequence[float], passages: Sequence[Passage]) -> list[Passage]:  # type: ignore[no-untyped-def]
    """``RelevanceMeter(embedder).measure`` once (tests, calibration)."""
    return await RelevanceMeter(embedder).measure(query_vector, passages)


def best_relevance(passages: Sequence[Passage]) -> float | None:
    """The highest measured relevance among the passages (None when none was measured)."""
    measured = [p.relevance for p in passages if p.relevance is not None]
    return max(measured) if measured else None


# irregular forms that ``fold`` cannot reach, as users and help centers write them ("I lost my
# phone" / "what if I lose my phone", "paid" / "pay")
IRREGULAR = {
    "lost": "lose", "paid": "pay", "sent": "send", "bought": "buy", "made": "make", "took": "take",
    "taken": "take", "gave": "give", "given": "give", "forgot": "forget", "forgotten": "forget",
    "chose": "choose", "chosen": "choose", "kept": "keep", "wrote": "write", "written": "write",
    "ran": "run", "began": "begin", "begun": "begin", "broke": "break", "broken": "break",
    "stole": "steal", "stolen": "steal", "spent": "spend", "built": "build", "understood": "understand",
}


def match_key(word: str) -> str:
    """A folded content word as coverage compares it: an irregular form is its base ("lost" meets
    "lose"), a doubled final consonant is undoubled, so the fold of "logged" ("logg") meets "log" and
    "planned" meets "plan" (applied to both sides)."""
    word = IRREGULAR.get(word, word)
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiousy":
        return word[:-1]
    return word


def query_terms(query: str) -> set[str]:
    """The words of a question that coverage looks for: its content words, plus short all-capitals
    acronyms ("IP", "EU", "US") that ``content_words`` drops for being two letters long."""
    terms = {match_key(w) for w in content_words(query)}
    terms |= {w.lower() for w in words(query) if len(w) == 2 and w.isalpha() and w.isupper() and w.lower() not in STOPWORDS}
    return terms


@lru_cache(maxsize=4096)  # the same passages come back turn after turn
def passage_terms(text: str) -> frozenset[str]:
    """What ``query_terms`` are looked up in: the text's content words and its two-letter words."""
    return frozenset({match_key(w) for w in content_words(text)} | {w.lower() for w in words(text) if len(w) == 2})


def _term_pairs(query: str, spelling: frozenset[str]) -> list[tuple[str, str]]:
    """(term, the term as a passage with words ``spelling`` spells it) for each term of the question."""
    pairs = []
    for raw in words(query):
        term = query_terms(raw)
        if term:
            fixed = query_terms(corrected(raw, spelling)) or term
            pairs.append((next(iter(term)), next(iter(fixed))))
    return pairs


def term_coverage(query: str, passages: Sequence[Passage]) -> float:
    """Share of the question's terms (``query_terms``) found in the passages' titles or texts, each
    term also read as the passage spells it (``processors.spelling``: "referal" finds "referral")."""
    wanted = query_terms(query)
    if not wanted:
        return 0.0
    found: set[str] = set()
    for passage in passages:
        text = f"{passage.title} {passage.text}"
        vocabulary = passage_terms(text)
        found |= {term for term, fixed in _term_pairs(query, text_words(text)) if term in vocabulary or fixed in vocabulary}
    return len(found & wanted) / len(wanted)


def answer_score(query: str, passages: Sequence[Passage]) -> float | None:
    """Best ``relevance + LEXICAL_WEIGHT * coverage`` over the passages, each on its own: one passage
    must both mean what the question means and name what it names (None when nothing was measured)."""
    scores = [p.relevance + LEXICAL_WEIGHT * term_coverage(query, [p]) for p in passages if p.relevance is not None]
    return max(scores) if scores else None


def turn_score(query: str, latest: str, passages: Sequence[Passage]) -> float | None:
    """The decision score of a turn.

    A follow-up is searched as "previous + latest" text (``processors.condense``). Its passages'
    relevance is already the better of the two readings (the retriever measures both), but the
    lexical half counts only the words of the latest message: the previous question's words are
    covered by construction (that question was answered), so counting them would declare any
    follow-up covered ("how do I cancel?" then "what's the weather like there?"). What the follow-up
    names itself must be in the passages. A follow-up that names nothing ("and then?") is judged on
    the combined text.
    """
    if latest == query or not query_terms(latest):
        return answer_score(query, passages)
    return answer_score(latest, passages)


def covers(passages: Sequence[Passage], min_score: float, query: str = "", latest: str | None = None) -> bool:
    """True when the passages are relevant enough to answer from (``answer_score >= min_score``).

    No passages: not covered. Passages without a measured relevance (records from before the field
    existed, a retriever that did not measure): covered, since there is nothing to decide on.
    ``min_score <= 0`` turns the check off.
    """
    if min_score <= 0:
        return True
    return is_covered(turn_score(query, latest if latest is not None else query, passages) if passages else None,
                      passages, min_score)


def is_covered(score: float | None, passages: Sequence[Passage], min_score: float) -> bool:
    """``covers`` for a turn whose ``turn_score`` is already known (the retriever computes it once)."""
    if min_score <= 0:
        return True
    if not passages:
        return False
    return score is None or score >= min_score
