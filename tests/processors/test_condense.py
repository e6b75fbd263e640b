"""Query condensation: which messages lean on the previous one, and what is searched for them."""

from __future__ import annotations

import pytest

from processors.condense import MAX_CONTEXT_CHARS, condensed_question, is_follow_up, previous_user_message, searchable_text


@pytest.mark.parametrize(
    "text",
    [
        "what if I lose my phone?",  # opener
        "and if we pay yearly?",
        "how much space does that use on my phone",  # anaphora
        "is that on the free plan too?",
        "how long until it gets locked?",
        "pricing?",  # short whatever it says
        "does it work offline",
    ],
)
def test_follow_ups_of_the_labelled_conversations_are_recognised(text):
    assert is_follow_up(text)


@pytest.mark.parametrize(
    "text",
    [
        "How do I reset my password?",
        "Is there a mobile app for Android?",
        "do you have an audit log for our security team",  # names its own subject
        "my edits from the phone are not showing on the web",
        "where is the data hosted",  # short, but names its own subject
        "what is the price of the Business plan per user?",
        "",
    ],
)
def test_standalone_questions_are_not_follow_ups(text):
    assert not is_follow_up(text)


def test_a_follow_up_is_condensed_with_the_previous_question():
    assert condensed_question("how long until it gets locked?", "my payment failed") == (
        "my payment failed how long until it gets locked?"
    )


def test_a_standalone_question_is_searched_alone():
    assert condensed_question("How do I reset my password?", "Tell me about Slack") == "How do I reset my password?"


def test_a_first_message_is_searched_alone():
    assert condensed_question("and for teams?", "") == "and for teams?"


def test_identifiers_are_left_out_of_both_parts_and_the_context_is_bounded():
    previous = "my export failed (ref 1a047f8a-e453-4c1b) " + "x" * 600
    condensed = condensed_question("and now?  order 99887766", previous)
    assert "1a047f8a" not in condensed and "99887766" not in condensed
    assert condensed.endswith(" and now? order") and len(condensed) <= MAX_CONTEXT_CHARS + len(" and now? order")
    assert searchable_text("Is 2FA on the 500 GB plan?") == "Is 2FA on the 500 GB plan?"


def test_previous_user_message_skips_assistant_and_system_messages():
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": "second"},
    ]
    assert previous_user_message(messages) == "first"
    assert previous_user_message(messages[:2]) == ""
