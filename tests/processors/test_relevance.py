"""Answerability: absolute relevance, the coverage decision, and how generation and validation honour it."""

from __future__ import annotations

import pytest

from processors.generation.extractive import ExtractiveProvider
from processors.generation.generator import Generator
from processors.records import ChatRequest, ChatTurn, Passage, Status
from processors.relevance import LEXICAL_WEIGHT, answer_score, best_relevance, cosine_similarity, covers, measure, term_coverage
from processors.retrieval import Retriever
from processors.validation.validator import Validator
from tests.processors.fakes_retrieval import HashEmbedder

REFUND = Passage("refunds", "refunds#0", "Refund policy", "u", "We offer a full refund within 14 days.", 1.0, relevance=0.62)


def _turn(text: str, passages: list[Passage], **kw) -> ChatTurn:
    request = ChatRequest("m1", "s1", "u1", "web", text, 1_000, tenant=kw.pop("tenant", "default"))
    return ChatTurn(request=request, passages=passages, **kw)


def test_cosine_similarity():
    assert cosine_similarity([1, 0], [1, 0]) == pytest.approx(1.0)
    assert cosine_similarity([1, 0], [0, 1]) == pytest.approx(0.0)
    assert cosine_similarity([1, 1], [-1, -1]) == pytest.approx(-1.0)
    assert cosine_similarity([], [1.0]) == 0.0
    assert cosine_similarity([0, 0], [1, 1]) == 0.0


def test_answer_score_adds_the_share_of_query_words_found():
    assert term_coverage("refund within days", [REFUND]) == pytest.approx(1.0)
    assert term_coverage("refund jira", [REFUND]) == pytest.approx(0.5)
    other = Passage("jira", "jira#0", "Jira", "u", "Connect Jira.", 0.5, relevance=0.3)
    assert term_coverage("refund jira", [REFUND, other]) == pytest.approx(1.0)  # over the passages given
    assert answer_score("refund jira", [REFUND, other]) == pytest.approx(max(0.62, 0.3) + LEXICAL_WEIGHT * 0.5)  # each passage alone
    assert answer_score("refund jira", [REFUND]) == pytest.approx(0.62 + LEXICAL_WEIGHT * 0.5)
    assert best_relevance([REFUND, Passage("a", "a#0", "", "", "", 0.5, relevance=0.7)]) == 0.7


def test_coverage_reads_a_typo_as_the_passage_spells_it():
    referral = Passage("referral-program", "r#0", "The referral program", "u", "Both of you get credit for referrals.", 1.0)
    assert term_coverage("referal credit", [referral]) == pytest.approx(1.0)  # inserted letter
    assert term_coverage("referarl credit", [referral]) == pytest.approx(1.0)  # swapped neighbours
    assert term_coverage("refferral credit", [referral]) == pytest.approx(1.0)  # doubled letter
    assert term_coverage("rafarral credit", [referral]) == pytest.approx(0.5)  # two edits: not the word
    mode = Passage("m", "m#0", "More", "u", "Read more about the node settings.", 1.0)
    assert term_coverage("dark mode", [mode]) == 0.0  # short words must match exactly ("mode" is not "more")


def test_coverage_meets_inflections_and_acronyms():
    audit = Passage("audit-log", "a#0", "The audit log", "u", "Each entry shows the person and their IP address.", 1.0)
    assert term_coverage("who logged in from a weird IP", [audit]) == pytest.approx(2 / 3)  # log, ip of log, weird, ip
    assert term_coverage("is there a log", [audit]) == pytest.approx(1.0)
    assert term_coverage("is it on in the EU", [audit]) == 0.0  # an acronym counts, and must be found
    assert term_coverage("IS THERE A LOG", [audit]) == pytest.approx(1.0)  # shouted stop words are no acronyms
    lost = Passage("lost-2fa-device", "l#0", "Lost your phone or security key", "u", "Use a recovery code.", 1.0)
    assert term_coverage("what if I lose my phone?", [lost]) == pytest.approx(1.0)  # an irregular form


CANCEL = Passage("cancel-subscription", "c#0", "Cancel your subscription", "u",
                 "Open Billing and click Cancel subscription; your data stays for 30 days.", 1.0, relevance=0.62)


def test_a_follow_up_is_covered_only_when_the_passages_name_what_it_asks():
    """The previous question's words are covered by construction: counting them declared any
    follow-up covered ("how do I cancel my subscription" then "what's the weather like there?")."""
    from processors.relevance import turn_score

    query = "how do I cancel my subscription what's the weather like there?"
    assert answer_score(query, [CANCEL]) == pytest.approx(0.62 + LEXICAL_WEIGHT * 2 / 3)  # cancel, subscription of cancel, subscription, weather
    assert turn_score(query, "what's the weather like there?", [CANCEL]) == pytest.approx(0.62)  # weather: not found
    assert not covers([CANCEL], 0.82, query, "what's the weather like there?")
    follow_up = "how do I cancel my subscription and is my data kept?"
    assert turn_score(follow_up, "and is my data kept?", [CANCEL]) == pytest.approx(0.62 + LEXICAL_WEIGHT * 1 / 2)  # data / kept
    assert covers([CANCEL], 0.82, follow_up, "and is my data kept?")
    # a follow-up that names nothing is judged on the combined text
    assert turn_score("how do I cancel my subscription and then?", "and then?", [CANCEL]) == pytest.approx(
        answer_score("how do I cancel my subscription and then?", [CANCEL])
    )


async def test_measure_takes_the_closest_sentence_or_title():
    embedder = HashEmbedder()
    passage = Passage("mobile-app", "mobile-app#0", "The mobile app", "u",
                      "Download it from the App Store. The app supports Face ID and fingerprint unlock.", 1.0)
    (query,) = await embedder.embed(["face id fingerprint unlock"])
    (measured,) = await measure(embedder, query, [passage])
    (sentence,) = await embedder.embed(["The app supports Face ID and fingerprint unlock."])
    assert measured.relevance == pytest.approx(cosine_similarity(query, sentence), abs=1e-5)
    assert measured.relevance > 0.5 and measured.score == 1.0 and measured.doc_id == "mobile-app"


def test_covers_decides_on_the_threshold_and_tolerates_unmeasured_passages():
    assert covers([REFUND], 0.82, "can i get a refund")  # 0.62 + 0.6 x 1.0
    assert not covers([REFUND], 1.5, "can i get a refund")
    assert not covers([REFUND], 0.82, "jira sync")  # 0.62 + 0.6 x 0.0
    assert not covers([], 0.5, "anything")  # nothing found at all
    unmeasured = Passage("x", "x#0", "", "", "text", 0.9)
    assert covers([unmeasured], 0.9, "q")  # an old record or a store that cannot measure: no decision
    assert covers([], 0.0, "q")  # 0 turns the check off


async def test_retriever_marks_a_turn_not_covered_but_keeps_its_passages():
    class Store:
        async def hybrid_search(self, query, vector, *, tenant, k, alpha):
            return [Passage("refunds", "refunds#0", "Refund policy", "u", "We offer a full refund within 14 days.", 1.0)]

    retriever = Retriever(Store(), HashEmbedder(), top_k=4, alpha=0.75, min_relevance=0.82)
    turn = await retriever.retrieve(_turn("do you have a jira integration", []))
    assert turn.retrieval_ok and not turn.answerable
    assert [p.doc_id for p in turn.passages] == ["refunds"]  # evaluation still sees what was found
    assert turn.passages[0].relevance is not None
    covered = await retriever.retrieve(_turn("full refund within 14 days", []))
    assert covered.answerable  # same words, same hashed direction: relevance ~1 plus full coverage


async def test_retriever_measures_a_typo_as_the_passages_spell_it():
    """With bag-of-words vectors "pasword" and "password" share no direction: the corrected reading is
    what makes the relevance high."""
    class Store:
        async def hybrid_search(self, query, vector, *, tenant, k, alpha):
            return [Passage("reset-password", "r#0", "Reset your password", "u", "Click forgot password on the login page.", 1.0)]

    embedder = HashEmbedder()
    retriever = Retriever(Store(), embedder, top_k=4, alpha=0.75, min_relevance=0.82)
    turn = await retriever.retrieve(_turn("reset pasword", []))
    # the title "Reset your password": 2 of its 3 words read as "reset password", 1 as "reset pasword"
    assert turn.passages[0].relevance == pytest.approx(2 / 6**0.5, abs=1e-5)
    assert ["reset password"] in embedder.calls and turn.answerable


async def test_generator_does_not_call_the_llm_for_a_turn_not_covered():
    class Boom:
        name = "boom"

        async def complete(self, *a, **kw):  # pragma: no cover - must not be called
            raise AssertionError("LLM called for an uncovered question")

    generator = Generator(Boom(), ExtractiveProvider(), system_prompt="sys")
    out = await generator.generate(_turn("do you have a jira integration", [REFUND], answerable=False))
    assert out.answer == "" and out.prompt_tokens == 0 and out.completion_tokens == 0 and not out.degraded


def test_validator_declines_honestly_with_the_tenants_wording_and_no_citations():
    validator = Validator(system_prompt="sys", not_found_reply="Not in our help center.", not_found_replies={"acme": "Acme's help center has nothing on that."})
    verdict = validator.validate(_turn("do you have a jira integration", [REFUND], answerable=False, answer=""))
    assert verdict.response.status is Status.FALLBACK
    assert verdict.response.reason == "not_covered"
    assert verdict.response.text == "Not in our help center."
    assert verdict.response.citations == []
    assert verdict.escalation is None
    assert verdict.failed_rules == ["not_covered"]
    acme = validator.validate(_turn("jira?", [REFUND], answerable=False, answer="", tenant="acme", session_failures=5))
    assert acme.response.text == "Acme's help center has nothing on that." and acme.response.status is Status.FALLBACK


def test_a_hand_off_request_still_escalates_when_not_covered():
    verdict = Validator(system_prompt="sys").validate(_turn("I want to talk to a human agent", [], answerable=False, answer=""))
    assert verdict.response.status is Status.ESCALATED


def test_identifiers_are_left_out_of_what_is_searched() -> None:
    """An order number or a reference id means nothing to a help center and must not dilute the query."""
    from processors.retrieval import searchable_text

    text = "turn 3: how do I export my data? (ref 1a047f8a-e453-4c40-8308-f1536f35aa01) order #A1234567"
    assert searchable_text(text) == "turn 3: how do I export my data? (ref order"
    assert searchable_text("Is 2FA on the 500 GB plan?") == "Is 2FA on the 500 GB plan?"
