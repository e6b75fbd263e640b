from genhelpers import REFUND_PASSAGES

from processors.generation.extractive import NO_ANSWER, ExtractiveProvider
from processors.generation.prompt import build_prompt
from processors.records import Passage


def prompt_for(question, passages):
    return build_prompt(system_prompt="sys", question=question, passages=passages, budget_tokens=3000)


async def test_quotes_the_matching_sentences_with_their_doc_ids():
    provider = ExtractiveProvider()
    prompt = prompt_for("How long do refunds take for annual plans?", REFUND_PASSAGES)
    completion = await provider.complete(prompt.messages, max_tokens=400, passages=prompt.passages)
    assert "Refunds for annual plans are issued within 14 days of cancellation [billing-refunds]." in completion.text
    assert completion.provider == "extractive" and completion.model == "extractive"
    assert completion.prompt_tokens > 0 and completion.completion_tokens > 0
    # Nothing but quotes and citations: every cited id is a passage id.
    assert "[billing-invoices]" not in completion.text or "Invoices" in completion.text


async def test_deterministic():
    provider = ExtractiveProvider()
    prompt = prompt_for("refund payment method?", REFUND_PASSAGES)
    answers = {(await provider.complete(prompt.messages, max_tokens=400, passages=prompt.passages)).text for _ in range(5)}
    assert len(answers) == 1
    assert "original payment method [billing-refunds]" in answers.pop()


async def test_says_plainly_when_there_is_nothing_to_quote():
    provider = ExtractiveProvider()
    prompt = prompt_for("What is the meaning of life?", [])
    completion = await provider.complete(prompt.messages, max_tokens=400, passages=[])
    assert completion.text == NO_ANSWER


def test_paraphrase_without_shared_words_leads_with_the_top_passage():
    provider = ExtractiveProvider()
    text = provider.answer("Can I get my cash returned?", REFUND_PASSAGES)
    assert text.split(": ", 1)[1].startswith("Refunds for annual plans are issued within 14 days")
    assert "[billing-refunds]" in text


def test_respects_the_length_limit():
    long = Passage("d", "d#0", "T", "s", " ".join(f"Sentence number {i} about refunds." for i in range(50)), 0.9)
    text = ExtractiveProvider(max_sentences=10).answer("refunds", [long], max_chars=120)
    assert len(text) <= 160 and "[d]" in text
