"""PII redaction on a stream of answer pieces, with a small hold-back window.

Why hold back: the LLM streams a card number as "4111 1111", " 1111", " 1111" — redacting each piece
alone would show every one of them. ``StreamRedactor`` only ever releases text up to a *safe cut*:
a whitespace character whose neighbours cannot belong to one PII value (``pii``'s patterns cross
whitespace only between digits and phone brackets, as in "4111 1111" or "(555) 123"), and whose next
character has already arrived. Everything after the last safe cut stays held, so a value still being
written is never split; each released segment is redacted with the same rules as the final answer
(``pii.redact``, with the published contact points allowed). ``holdback_chars`` keeps that many more
characters back (smoother, never needed for correctness). ``flush`` releases the rest at the end.

The validate stage's final reply stays authoritative: this only makes sure provisional text never
shows what the final reply would redact.
"""

from __future__ import annotations

from collections.abc import Iterable

from processors.validation.pii import published_contacts, redact

# A PII value may span a space only where digits or phone brackets meet across it.
_JOIN_BEFORE = set("0123456789)")
_JOIN_AFTER = set("0123456789(+")


class StreamRedactor:
    def __init__(self, *, allowed: Iterable[str] = (), holdback_chars: int = 0) -> None:
        if holdback_chars < 0:
            raise ValueError("holdback_chars must not be negative")
        self.allowed = published_contacts(allowed)  # scanned once, not for every released piece
        self.holdback_chars = holdback_chars
        self._held = ""
        self.found: dict[str, int] = {}

    @property
    def held(self) -> str:
        return self._held

    def feed(self, piece: str) -> str:
        """Add raw text; returns the redacted text that is safe to show now (may be empty)."""
        self._held += piece
        cut = self._safe_cut()
        if cut <= 0:
            return ""
        release, self._held = self._held[:cut], self._held[cut:]
        return self._redact(release)

    def flush(self) -> str:
        """The end of the answer: everything still held, redacted."""
        release, self._held = self._held, ""
        return self._redact(release) if release else ""

    def _safe_cut(self) -> int:
        text = self._held
        # the cut goes right after a whitespace whose next character is known
        for i in range(len(text) - 2 - self.holdback_chars, -1, -1):
            if not text[i].isspace():
                continue
            before = text[i - 1] if i > 0 else ""
            after = text[i + 1]
            if before in _JOIN_BEFORE and after in _JOIN_AFTER:
                continue  # inside "4111 1111" or "+1 (555) 123": one value may go on across it
            if before.isspace() or after.isspace():
                continue  # cut at the last whitespace of a run only
            return i + 1
        return 0

    def _redact(self, text: str) -> str:
        result = redact(text, allowed=self.allowed)
        for kind, n in result.found.items():
            self.found[kind] = self.found.get(kind, 0) + n
        return result.text
