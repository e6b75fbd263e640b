"""The hold-back redactor: PII split across streamed pieces never comes out unredacted."""

from __future__ import annotations

import itertools

import pytest

from processors.validation.pii import CARD_MASK, EMAIL_MASK, PHONE_MASK, redact
from processors.validation.stream_redactor import StreamRedactor

CARD = "4111 1111 1111 1111"  # Luhn-valid test number


def run(pieces: list[str], **kw) -> tuple[list[str], StreamRedactor]:
    redactor = StreamRedactor(**kw)
    out = [redactor.feed(p) for p in pieces]
    out.append(redactor.flush())
    return out, redactor


def split_every(text: str, n: int) -> list[str]:
    return [text[i : i + n] for i in range(0, len(text), n)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11])
def test_a_card_number_split_anywhere_is_redacted(size: int) -> None:
    text = f"Your card {CARD} was charged twice, sorry."
    out, redactor = run(split_every(text, size))
    shown = "".join(out)
    assert "1111" not in shown and "4111" not in shown
    assert shown == redact(text).text
    assert redactor.found == {"card": 1}
    # and no released chunk ever held a digit of the card
    assert not any(c.isdigit() for chunk in out for c in chunk)


def test_word_pieces_as_an_llm_streams_them() -> None:
    words = "Call +1 (555) 123-4567 or mail jane.doe@example.com , card 4111 1111 1111 1111 .".split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    out, _ = run(pieces)
    shown = "".join(out)
    assert PHONE_MASK in shown and EMAIL_MASK in shown and CARD_MASK in shown
    assert "555" not in shown and "jane" not in shown and "4111" not in shown
    assert shown == redact("".join(pieces)).text


def test_text_is_released_as_it_comes_not_only_at_the_end() -> None:
    redactor = StreamRedactor()
    assert redactor.feed("Hello there") == "Hello "  # "there" may still grow
    assert redactor.feed(" my") == "there "
    assert redactor.feed(" friend") == "my "
    assert redactor.flush() == "friend"


def test_a_trailing_digit_group_is_held_until_it_cannot_grow() -> None:
    redactor = StreamRedactor()
    assert redactor.feed("order 4111 ") == "order "
    assert redactor.feed("1111") == ""
    assert redactor.feed(" 1111 1111") == ""
    assert redactor.feed(" ok") == CARD_MASK + " "
    assert redactor.flush() == "ok"


def test_published_contact_points_are_kept() -> None:
    out, _ = run(["Write to ", "support@", "northwind.example", " today"], allowed=["support@northwind.example"])
    assert "".join(out) == "Write to support@northwind.example today"


def test_holdback_keeps_extra_characters_back() -> None:
    redactor = StreamRedactor(holdback_chars=10)
    assert redactor.feed("one two three four") == "one "  # the last 10 characters stay back
    assert redactor.flush() == "two three four"


def test_every_two_way_split_gives_the_same_text_as_redacting_the_whole() -> None:
    text = "Card 4111-1111-1111-1111, phone 0176 1234 5678, mail a.b@c.de, date 2024-01-02."
    for i, j in itertools.combinations(range(1, len(text)), 2):
        out, _ = run([text[:i], text[i:j], text[j:]])
        assert "".join(out) == redact(text).text, (i, j)
