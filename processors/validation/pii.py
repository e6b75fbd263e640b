"""PII redaction for answers: e-mail addresses, phone numbers, payment card numbers.

Card numbers are redacted only when they pass the Luhn check, so order numbers, ticket ids and
other long digit runs in an answer survive. Phone numbers need 8 to 15 digits (E.164 allows at
most 15) in a phone-like shape, and ISO dates and version strings are left alone. Contact points
published in the retrieved passages (``support@...``, a hotline) are not personal data: pass them
as ``allowed`` and they are kept, except card numbers, which are always redacted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from dataclasses import dataclass, field

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
# 13-19 digits, optionally grouped by single spaces or dashes.
CARD = re.compile(r"(?<![\d\w])\d(?:[ -]?\d){12,18}(?![\d\w])")
PHONE = re.compile(
    r"(?<![\w+])(?:\+|00)?\d{1,4}?[ .-]?(?:\(\d{1,5}\)[ .-]?)?\d{2,5}(?:[ .-]?\d{2,5}){1,4}(?![\w])"
)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_VERSION = re.compile(r"^\d+(?:\.\d+){2,}$")

EMAIL_MASK = "[email redacted]"
PHONE_MASK = "[phone redacted]"
CARD_MASK = "[card redacted]"


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (separators removed beforehand)."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


@dataclass
class Redaction:
    text: str
    found: dict[str, int] = field(default_factory=dict)  # kind -> count redacted

    @property
    def changed(self) -> bool:
        return bool(self.found)


@dataclass(frozen=True)
class PublishedContacts:
    """The e-mails and phone numbers found in published texts (passages): kept, never masked."""

    emails: frozenset[str] = frozenset()
    phones: frozenset[str] = frozenset()


def published_contacts(texts: Iterable[str]) -> PublishedContacts:
    """Scan the texts once; a streamed answer is redacted piece by piece against the same passages."""
    return _scan_contacts(tuple(texts))


@lru_cache(maxsize=2048)  # the same passages come back turn after turn (and twice per turn: stream + final)
def _scan_contacts(texts: tuple[str, ...]) -> PublishedContacts:
    return PublishedContacts(
        frozenset(m.group(0).lower() for a in texts for m in EMAIL.finditer(a)),
        frozenset(_digits(m.group(0)) for a in texts for m in PHONE.finditer(a) if _is_phone(m.group(0))),
    )


def redact(text: str, *, allowed: Iterable[str] | PublishedContacts = ()) -> Redaction:
    """``text`` with PII replaced by masks; ``allowed`` e-mails/phones (published ones) are kept."""
    contacts = allowed if isinstance(allowed, PublishedContacts) else published_contacts(allowed)
    allowed_emails, allowed_phones = contacts.emails, contacts.phones
    found: dict[str, int] = {}

    def count(kind: str) -> None:
        found[kind] = found.get(kind, 0) + 1

    def card(match: re.Match[str]) -> str:
        digits = _digits(match.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            count("card")
            return CARD_MASK
        return match.group(0)

    def email(match: re.Match[str]) -> str:
        if match.group(0).lower() in allowed_emails:
            return match.group(0)
        count("email")
        return EMAIL_MASK

    def phone(match: re.Match[str]) -> str:
        raw = match.group(0)
        if not _is_phone(raw) or _digits(raw) in allowed_phones:
            return raw
        count("phone")
        return PHONE_MASK

    text = CARD.sub(card, text)
    text = EMAIL.sub(email, text)
    text = PHONE.sub(phone, text)
    return Redaction(text, found)


def _is_phone(raw: str) -> bool:
    stripped = raw.strip()
    if _ISO_DATE.match(stripped) or _VERSION.match(stripped):
        return False
    digits = _digits(stripped)
    if not 8 <= len(digits) <= 15:
        return False
    # A bare run of digits is more likely an id than a phone number unless it starts like one.
    if stripped.isdigit() and not stripped.startswith("0"):
        return False
    return True
