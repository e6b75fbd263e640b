"""Users' typos, corrected against the words of the passages a question retrieved.

A one-letter typo ("pasword", "Busiess plan", "what hppens") barely moves BM25 (the other words still
match) but pulls the question's embedding away from its meaning: the closest sentence's cosine drops,
and a covered question can look uncovered. The relevance of a passage is therefore also measured with
the question as the passages spell it: each word that is not an English word (not a whole word of the
local MiniLM tokenizer's vocabulary, which ships with the model) and not in the passages, but one edit
away from a passage word with the same first letter, is replaced by that word. Real words are never
"corrected" ("apple" stays "apple" even next to "apply"), and nothing is looked up anywhere else: the
passages at hand are the dictionary of the help center.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from functools import lru_cache

log = logging.getLogger(__name__)

MIN_CHARS = 5  # shorter words are left alone: one edit away from too many others
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")


def within_one_edit(a: str, b: str) -> bool:
    """True when ``b`` is ``a`` with one letter inserted, deleted, replaced, or two neighbours swapped."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    i = 0
    while i < min(la, lb) and a[i] == b[i]:
        i += 1
    if la == lb:
        return a[i + 1 :] == b[i + 1 :] or (i + 1 < la and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :])
    return a[i + 1 :] == b[i:] if la > lb else a[i:] == b[i + 1 :]


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """Whole lower-case words of the local MiniLM tokenizer's vocabulary (about 22,000); empty when the
    model is not installed (an API embedder), and then every long unknown word may be corrected."""
    try:
        from processors.minilm import locate_minilm_files

        _, tokenizer = locate_minilm_files()
        vocab = json.loads(tokenizer.read_text(encoding="utf-8"))["model"]["vocab"]
    except Exception:  # noqa: BLE001 - no dictionary only makes correction less careful
        log.info("no tokenizer vocabulary for spelling correction; correcting unknown words of %d+ letters", MIN_CHARS)
        return frozenset()
    return frozenset(w for w in vocab if w.isalpha() and w.islower())


def corrected(text: str, vocabulary: Iterable[str], known: frozenset[str] | None = None) -> str:
    """``text`` with its misspelt words replaced by the ``vocabulary`` word one edit away (see module doc).

    Pass a frozenset (``passage_vocabulary``) where the same passages come back turn after turn: its
    lookup index is built once, not for every question and every word of it."""
    known = english_words() if known is None else known
    words = _lowered(vocabulary) if isinstance(vocabulary, frozenset) else frozenset(w.lower() for w in vocabulary)
    by_initial = _by_initial(words)

    def fix(match: re.Match[str]) -> str:
        word = match.group(0)
        low = word.lower()
        if len(low) < MIN_CHARS or low in words or low in known:
            return word
        for candidate in by_initial.get(low[:1], ()):
            if abs(len(candidate) - len(low)) <= 1 and within_one_edit(low, candidate):
                return candidate
        return word

    return _WORD.sub(fix, text)


@lru_cache(maxsize=4096)
def _lowered(words: frozenset[str]) -> frozenset[str]:
    return frozenset(w.lower() for w in words)


@lru_cache(maxsize=4096)
def _by_initial(words: frozenset[str]) -> dict[str, tuple[str, ...]]:
    """The vocabulary's words by first letter, in a stable order (the first match wins)."""
    grouped: dict[str, list[str]] = {}
    for w in sorted(words):
        grouped.setdefault(w[:1], []).append(w)
    return {initial: tuple(ws) for initial, ws in grouped.items()}


def passage_words(texts: Iterable[str]) -> set[str]:
    """The words of passage titles and texts, lower-cased."""
    return {w.lower() for text in texts for w in _WORD.findall(text)}


@lru_cache(maxsize=4096)  # the same passages come back turn after turn
def text_words(text: str) -> frozenset[str]:
    """``passage_words`` of one text, kept."""
    return frozenset(passage_words([text]))


def passage_vocabulary(texts: Iterable[str]) -> frozenset[str]:
    """The words of several passages, from each passage's kept words."""
    return frozenset().union(*(text_words(t) for t in texts))
