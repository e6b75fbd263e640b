"""Typos corrected against the retrieved passages' words, never into another real word."""

from __future__ import annotations

from processors.spelling import corrected, english_words, passage_words, within_one_edit

HELP = passage_words(["Reset your password", "The Business plan: paying per user. What happens when you upgrade."])


def test_a_typo_becomes_the_passage_word_one_edit_away():
    assert corrected("How do I reset my pasword?", HELP) == "How do I reset my password?"
    assert corrected("How much is the Busiess plan", HELP) == "How much is the business plan"
    assert corrected("what hppens after pying", HELP) == "what happens after paying"
    assert corrected("upgarde", HELP) == "upgrade"  # swapped neighbours


def test_real_words_short_words_and_far_words_stay():
    vocabulary = passage_words(["Apply the credit. More pages."])
    assert corrected("is there an apple watch app", vocabulary) == "is there an apple watch app"  # "apple" is a word
    assert corrected("dark mode", vocabulary) == "dark mode"  # four letters: too many neighbours
    assert corrected("paswwrdd", HELP) == "paswwrdd"  # more than one edit
    assert corrected("qassword", HELP) == "qassword"  # another first letter


def test_the_dictionary_is_the_local_tokenizer_vocabulary():
    words = english_words()
    assert len(words) > 15_000 and {"apple", "watch", "password"} <= words and "pasword" not in words


def test_without_a_dictionary_every_long_unknown_word_may_be_corrected():
    vocabulary = passage_words(["Apply the credit."])
    assert corrected("apple", vocabulary, known=frozenset()) == "apply"
    assert corrected("apple", vocabulary) == "apple"


def test_within_one_edit():
    assert within_one_edit("pasword", "password") and within_one_edit("password", "pasword")
    assert within_one_edit("subscribtion", "subscription") and within_one_edit("recieve", "receive")
    assert not within_one_edit("pasword", "passwords") and not within_one_edit("abcd", "dcba")
