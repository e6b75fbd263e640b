"""Small lexical tools shared by the extractive provider, validation and the dev LLM server.

Deliberately simple (regexes, a stop-word list, a crude plural/suffix folding) because they run on
every turn on the event loop and must be deterministic; they measure word overlap, not meaning.
"""

from __future__ import annotations

import re
from functools import lru_cache

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are aren as at be because been before being
    below between both but by can cannot could did didn do does doesn doing don down during each either
    else ever every few for from further get gets got had has have having he her here hers herself him
    himself his how however i if in into is isn it its itself just let lets like may me might more most
    much must my myself no nor not now of off on once only or other our ours ourselves out over own per
    please same shall she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up upon us very via want was we were what when where which
    while who whom why will with within without would yes yet you your yours yourself yourselves
    i'm you're it's don't can't won't isn't aren't doesn't didn't i've we're they're that's there's what's
    """.split()
)

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’_-]*")
# A sentence ends at . ! or ? (plus closing quotes and any trailing [doc_id] citations) before a
# capital or digit, at a blank line, or before a list item.
_BOUNDARY = re.compile(
    r"(?P<end>[.!?]+[\"')]*(?:\s*\[[^\]\s]{1,128}\])*)\s+(?=[\"'(\[]?[A-Z0-9])"
    r"|\n\s*\n"
    r"|\n(?=\s*(?:[-*•]|\d+[.)])\s)"
)
CITATION = re.compile(r"\[([A-Za-z0-9][A-Za-z0-9_.:/#-]{0,127})\]")


@lru_cache(maxsize=65536)  # a help center's vocabulary is small and every turn repeats it
def fold(word: str) -> str:
    """Lower-case and fold common English suffixes so 'refunds' meets 'refund'."""
    w = word.lower().replace("’", "'").strip("'-_")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 5 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 5 and w.endswith("ing"):
        return w[:-3]
    if len(w) > 4 and w.endswith("ed"):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def content_words(text: str) -> list[str]:
    """Folded words that carry meaning: not stop words, and either 3+ letters or containing a digit."""
    out = []
    for raw in words(CITATION.sub(" ", text)):
        low = raw.lower().replace("’", "'")
        if low in STOPWORDS:
            continue
        if len(low) < 3 and not any(c.isdigit() for c in low):
            continue
        out.append(fold(low))
    return out


@lru_cache(maxsize=8192)  # the same passages come back turn after turn
def vocabulary(text: str) -> frozenset[str]:
    return frozenset(content_words(text))


def split_sentences(text: str) -> list[str]:
    """Sentences (and list items) of ``text``, stripped, empty ones removed."""
    text = text.strip()
    out: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        cut = match.end("end") if match.group("end") else match.start()
        out.append(text[start:cut])
        start = match.end()
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def normalized_words(text: str) -> list[str]:
    """All words lower-cased, for n-gram comparisons where stop words matter."""
    return [w.lower().replace("’", "'") for w in words(text)]


def cited_ids(text: str) -> list[str]:
    """Doc ids cited as ``[doc_id]``, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in CITATION.finditer(text):
        seen.setdefault(match.group(1), None)
    return list(seen)
