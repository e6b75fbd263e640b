"""Records shared by the generation tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

from processors.records import ChatRequest, ChatTurn, Passage

REFUND_PASSAGES = [
    Passage(
        doc_id="billing-refunds",
        chunk_id="billing-refunds#0",
        title="Refunds",
        source="kb/billing/refunds.md",
        text=(
            "Refunds for annual plans are issued within 14 days of cancellation. "
            "Monthly plans are not refunded, but you keep access until the end of the period. "
            "Refunds go back to the original payment method."
        ),
        score=0.91,
    ),
    Passage(
        doc_id="billing-invoices",
        chunk_id="billing-invoices#0",
        title="Invoices",
        source="kb/billing/invoices.md",
        text="Invoices are emailed on the first day of each month. You can download them from the Billing page.",
        score=0.55,
    ),
]


def make_turn(text: str = "How long do refunds take for annual plans?", **kwargs) -> ChatTurn:
    request = ChatRequest(
        message_id=kwargs.pop("message_id", "m-1"),
        session_id="s-1",
        user_id="u-1",
        channel="web",
        text=text,
        sent_at=kwargs.pop("sent_at", 1_700_000_000_000),
    )
    kwargs.setdefault("passages", list(REFUND_PASSAGES))
    return ChatTurn(request=request, **kwargs)
