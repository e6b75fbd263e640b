"""Reply-marker recovery is shared by the stages of a worker: one read at start, one per rebalance."""

from __future__ import annotations

import asyncio

from streams.config import Settings
from streams.stages import replies


async def test_start_and_rebalance_reads_are_shared(monkeypatch) -> None:
    reads: list[int] = []
    gate = asyncio.Event()

    async def fake_recover(settings, codec, sessions, per_partition=5000):
        reads.append(len(reads))
        await gate.wait()
        return 0

    monkeypatch.setattr(replies, "recover_markers", fake_recover)
    recovery = replies.MarkerRecovery(Settings(), codec=None, sessions=None)  # type: ignore[arg-type]

    gate.set()
    await asyncio.gather(recovery.ensure_recovered(), recovery.ensure_recovered())
    assert reads == [0], "enrich and validate share the start-up read"

    gate.clear()
    recovery.recover_in_background()
    recovery.recover_in_background()  # the other stage, same rebalance: not started yet, so shared
    await asyncio.sleep(0)
    assert len(reads) == 2
    ready = asyncio.create_task(recovery.ready())
    await asyncio.sleep(0.01)
    assert not ready.done(), "turns wait while the read runs"
    recovery.recover_in_background()  # a request during a read restarts it
    await asyncio.sleep(0)
    assert len(reads) == 3
    gate.set()
    await asyncio.wait_for(ready, 1)


def test_one_recovery_per_outbound_topic_and_redis() -> None:
    base = Settings()
    a = replies.shared_recovery(base, None, None)  # type: ignore[arg-type]
    assert replies.shared_recovery(base, None, None) is a  # type: ignore[arg-type]
    assert replies.shared_recovery(base.derive(topic_prefix="other."), None, None) is not a  # type: ignore[arg-type]


class _Sessions:
    """The SessionStore calls validate makes (replied check, claim, record), recorded."""

    def __init__(self, replied: set[str]) -> None:
        self.replied = replied
        self.recorded: list[tuple[str, str]] = []
        self.finished: list[tuple[str, str, str]] = []

    async def is_replied(self, message_id: str) -> bool:
        return message_id in self.replied

    async def record_reply(self, request, response) -> None:  # type: ignore[no-untyped-def]
        self.recorded.append((request.message_id, response.text))

    async def claim_reply(self, message_id: str, ttl_ms: int):  # type: ignore[no-untyped-def]
        from processors.session import ReplyClaim

        return ReplyClaim(message_id, "test-owner", 1, "replied" if message_id in self.replied else "ok")

    async def finish_reply(self, claim, request, response) -> bool:  # type: ignore[no-untyped-def]
        self.finished.append((claim.message_id, request.message_id, response.text))
        return True


class _Ready:
    async def ready(self) -> None:
        return None


async def test_a_repeat_of_an_answered_turn_records_its_answer_and_replies_nothing() -> None:
    """kill -9 after the reply was produced but before it was recorded: the turn comes back as a
    duplicate, and its answer must still reach the session history (the RECORD script appends
    an answer once per message_id, so a repeat that was recorded changes nothing)."""
    from opentelemetry.trace import INVALID_SPAN

    from processors.records import ChatRequest, ChatTurn, now_ms
    from processors.validation import Validator
    from streams.stages.validate import ValidateStage

    settings = Settings()
    stage = ValidateStage(settings)
    stage.validator = Validator.from_settings(settings)
    request = ChatRequest(message_id="m1", session_id="s1", user_id="u1", channel="web", text="How do I export?",
                          sent_at=now_ms())
    turn = ChatTurn(request=request, answer="Open Settings, then Export.")
    stage.sessions = _Sessions(replied={"m1"})  # type: ignore[assignment]
    stage.markers = _Ready()  # type: ignore[assignment]
    assert await stage.process(turn, None, INVALID_SPAN) == []  # type: ignore[arg-type]
    expected = stage.validator.validate(turn).response.text
    assert stage.sessions.recorded == [("m1", expected)]  # type: ignore[attr-defined]

    fresh = ChatTurn(request=ChatRequest(message_id="m2", session_id="s1", user_id="u1", channel="web",
                                         text="And import?", sent_at=now_ms()), answer="Use Import.")
    outputs = await stage.process(fresh, None, INVALID_SPAN)  # type: ignore[arg-type]
    assert [o.topic for o in outputs][:1] == [settings.topics.outbound]
    assert stage.sessions.recorded == [("m1", expected)], "a first answer is recorded after its produce, not here"  # type: ignore[attr-defined]


async def test_an_answer_is_marked_under_its_claim_and_recorded_in_one_call() -> None:
    from opentelemetry.trace import INVALID_SPAN

    from processors.records import ChatRequest, ChatTurn, now_ms
    from processors.validation import Validator
    from streams.stages.validate import ValidateStage

    settings = Settings()
    stage = ValidateStage(settings)
    stage.validator = Validator.from_settings(settings)
    stage.sessions = _Sessions(replied=set())  # type: ignore[assignment]
    stage.markers = _Ready()  # type: ignore[assignment]
    turn = ChatTurn(request=ChatRequest(message_id="m3", session_id="s1", user_id="u1", channel="web",
                                        text="How do I export?", sent_at=now_ms()), answer="Open Settings, then Export.")
    outputs = await stage.process(turn, None, INVALID_SPAN)  # type: ignore[arg-type]
    await stage.after_emit(turn, outputs)
    reply = outputs[-1].record  # the reply is the last output (an escalation, when there is one, comes first)
    assert stage.sessions.finished == [("m3", "m3", reply.text)]  # type: ignore[attr-defined]
    assert stage.sessions.recorded == [] and stage._claims == {}  # type: ignore[attr-defined]
