"""How much of an answer the retrieved passages support, and which passages it used.

Lexical, deterministic and cheap (it runs on every turn): an answer sentence is *supported* when
at least ``SUPPORT_THRESHOLD`` of its content words (stop words removed, plurals folded) occur in
the passages, or in the passage it cites. The score is the share of content words that sit in
supported sentences, so a long invented sentence weighs more than a short greeting. Sentences
with fewer than ``MIN_CONTENT_WORDS`` content words ("Sure!", "Hope this helps.") are not judged;
an answer made only of those scores 1.0 (nothing in it claims anything).

It catches invented facts, numbers and names that appear nowhere in the passages, which is what
low-confidence escalation needs; it does not catch a paraphrase that says the opposite using the
same words. An NLI model would; none runs fast enough offline here to sit on every turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from processors.generation.text import cited_ids, content_words, split_sentences, vocabulary
from processors.records import Passage

SUPPORT_THRESHOLD = 0.6
MIN_CONTENT_WORDS = 3
# A passage counts as used without a citation when one answer sentence of at least this many
# content words is this well covered by that passage alone.
USED_OVERLAP = 0.7
USED_MIN_WORDS = 4


@dataclass
class Grounding:
    score: float
    used_doc_ids: list[str] = field(default_factory=list)  # in passage rank order
    unknown_citations: list[str] = field(default_factory=list)  # cited ids that are not passages
    judged_sentences: int = 0
    unsupported: list[str] = field(default_factory=list)


def assess(answer: str, passages: Sequence[Passage]) -> Grounding:
    doc_vocab: dict[str, set[str]] = {}
    for passage in passages:
        doc_vocab.setdefault(passage.doc_id, set()).update(vocabulary(f"{passage.title} {passage.text}"))
    all_vocab: set[str] = set().union(*doc_vocab.values()) if doc_vocab else set()

    cited = cited_ids(answer)
    unknown = [c for c in cited if c not in doc_vocab]
    used: set[str] = {c for c in cited if c in doc_vocab}

    supported_words = total_words = judged = 0
    unsupported: list[str] = []
    for sentence in split_sentences(answer):
        words = content_words(sentence)
        if len(words) < MIN_CONTENT_WORDS:
            continue
        judged += 1
        unique = set(words)
        coverage = len(unique & all_vocab) / len(unique)
        sentence_cites = [c for c in cited_ids(sentence) if c in doc_vocab]
        if sentence_cites:
            coverage = max(coverage, max(len(unique & doc_vocab[c]) / len(unique) for c in sentence_cites))
        total_words += len(words)
        if coverage >= SUPPORT_THRESHOLD:
            supported_words += len(words)
        else:
            unsupported.append(sentence)
        if len(unique) >= USED_MIN_WORDS:
            for doc_id, vocab in doc_vocab.items():
                if len(unique & vocab) / len(unique) >= USED_OVERLAP:
                    used.add(doc_id)
    score = 1.0 if total_words == 0 else supported_words / total_words
    if not passages and total_words:
        score = 0.0
    order = list(dict.fromkeys(p.doc_id for p in passages))
    return Grounding(
        score=round(score, 4),
        used_doc_ids=[d for d in order if d in used],
        unknown_citations=unknown,
        judged_sentences=judged,
        unsupported=unsupported,
    )
