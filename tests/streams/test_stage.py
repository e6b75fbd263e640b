"""The stage runner without Kafka: dead letters, transient retries, one traceparent per output."""

from __future__ import annotations

import pytest

from processors.records import ChatRequest, ChatResponse, DeadLetter, Status, now_ms
from streams.codec import SingleObjectCodec
from streams.config import Settings
from streams.deadletter import RejectedInput
from streams.message import InboundMessage, OutboundRecord
from streams.stage import Stage, StageRunner


class FakeProducer:
    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list[tuple[str, bytes, str, list]] = []
        self.fail_first = fail_first

    async def send(self, topic, value, *, key=None, headers=None, partition=None):
        from streams.producer import ProduceError

        if self.fail_first:
            self.fail_first -= 1
            raise ProduceError("broker down")
        self.sent.append((topic, value, key, list(headers or [])))
        return 0, len(self.sent)


class EchoStage(Stage):
    name = "echo"
    input_type = ChatRequest

    def __init__(self, settings: Settings, behaviour: list[BaseException | None]) -> None:
        super().__init__(settings)
        self.behaviour = behaviour
        self.calls = 0
        self.after: list[str] = []

    @property
    def source(self) -> str:
        return self.topics.inbound

    async def process(self, request, msg, span):
        self.calls += 1
        outcome = self.behaviour.pop(0) if self.behaviour else None
        if outcome is not None:
            raise outcome
        reply = ChatResponse.for_request(request, "echo: " + request.text, Status.ANSWERED)
        return [OutboundRecord(self.topics.outbound, request.session_id, reply)]

    async def after_emit(self, request, outputs):
        self.after.append(request.message_id)


codec = SingleObjectCodec()


def message(value: bytes, headers=None) -> InboundMessage:
    return InboundMessage("chat.inbound", 2, 41, b"s1", value, headers or [])


def request() -> ChatRequest:
    return ChatRequest("m1", "s1", "u1", "web", "hi", now_ms())


@pytest.fixture()
def settings() -> Settings:
    return Settings(otlp_endpoint=None)


async def test_good_record_is_processed_emitted_then_after_emit(settings) -> None:
    stage, producer = EchoStage(settings, []), FakeProducer()
    upstream = [("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"), ("chatstream-origin", b"web")]
    await StageRunner(stage, settings, codec, producer).handle(message(codec.encode(request()), upstream))
    [(topic, value, key, headers)] = producer.sent
    assert topic == "chat.outbound" and key == "s1"
    assert codec.decode(value, ChatResponse).text == "echo: hi"
    # exactly one traceparent, of the upstream trace (the stage's span continues it)
    traceparents = [v for k, v in headers if k == "traceparent"]
    assert len(traceparents) == 1, headers
    assert traceparents[0].split(b"-")[1] == b"a" * 32, traceparents
    assert ("chatstream-origin", b"web") in headers
    assert stage.after == ["m1"]


async def test_undecodable_bytes_become_a_dead_letter_with_the_original_bytes(settings) -> None:
    stage, producer = EchoStage(settings, []), FakeProducer()
    await StageRunner(stage, settings, codec, producer).handle(message(b"\xffgarbage"))
    [(topic, value, _, _)] = producer.sent
    letter = codec.decode(value, DeadLetter)
    assert topic == "chat.deadletter" and letter.value == b"\xffgarbage"
    assert (letter.topic, letter.partition, letter.offset, letter.stage) == ("chat.inbound", 2, 41, "echo")
    assert "not Avro single-object" in letter.error_message and stage.calls == 0


async def test_transient_failures_are_retried_not_dead_lettered(settings) -> None:
    stage = EchoStage(settings, [ConnectionError("redis down"), TimeoutError("slow")])
    producer = FakeProducer(fail_first=2)
    await StageRunner(stage, settings, codec, producer).handle(message(codec.encode(request())))
    assert stage.calls == 3
    assert [t for t, *_ in producer.sent] == ["chat.outbound"]


@pytest.mark.parametrize("error", [RejectedInput("unknown channel 'fax'"), ValueError("a bug")])
async def test_rule_breaks_and_bugs_are_dead_lettered_and_the_stage_moves_on(settings, error) -> None:
    stage, producer = EchoStage(settings, [error]), FakeProducer()
    await StageRunner(stage, settings, codec, producer).handle(message(codec.encode(request())))
    [(topic, value, _, _)] = producer.sent
    letter = codec.decode(value, DeadLetter)
    assert topic == "chat.deadletter" and letter.message_id == "m1"
    assert letter.error_class == type(error).__name__ and str(error) in letter.error_message


class TwoOutputStage(EchoStage):
    """Returns a side record, then the reply (as validate returns an escalation, then the reply)."""

    async def process(self, request, msg, span):
        reply = ChatResponse.for_request(request, "echo: " + request.text, Status.ESCALATED)
        side = ChatResponse.for_request(request, "side record", Status.ESCALATED)
        return [OutboundRecord(self.topics.escalations, request.session_id, side),
                OutboundRecord(self.topics.outbound, request.session_id, reply)]


class SlowFirstDeliveryProducer(FakeProducer):
    """The first delivery report takes a while: a concurrent emitter would produce the second meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    async def send(self, topic, value, *, key=None, headers=None, partition=None):
        import asyncio

        self.events.append(f"produce {topic}")
        if len(self.events) == 1:
            await asyncio.sleep(0.05)
        self.events.append(f"delivered {topic}")
        return await super().send(topic, value, key=key, headers=headers, partition=partition)


async def test_outputs_are_delivered_in_order_the_reply_last(settings) -> None:
    # a reply on chat.outbound is taken as "answered" by marker recovery after a crash, so what the
    # stage returned before it must already be on Kafka when the reply is produced
    stage, producer = TwoOutputStage(settings, []), SlowFirstDeliveryProducer()
    await StageRunner(stage, settings, codec, producer).handle(message(codec.encode(request())))
    assert producer.events == [
        "produce chat.escalations", "delivered chat.escalations", "produce chat.outbound", "delivered chat.outbound",
    ]


async def test_validate_returns_an_escalation_before_its_reply(settings) -> None:
    from opentelemetry.trace import INVALID_SPAN

    from processors.records import ChatTurn
    from processors.validation import Validator
    from streams.stages.validate import ValidateStage

    class Claims:
        async def claim_reply(self, message_id, ttl_ms):
            from processors.session import ReplyClaim

            return ReplyClaim(message_id=message_id, owner="me", token=1, state="ok")

    class Ready:
        async def ready(self) -> None:
            return None

    stage = ValidateStage(settings)
    stage.validator = Validator.from_settings(settings)
    stage.sessions = Claims()  # type: ignore[assignment]
    stage.markers = Ready()  # type: ignore[assignment]
    # an answer with no passages to ground it: validation escalates it
    turn = ChatTurn(request=ChatRequest("m9", "s1", "u1", "web", "Can I get a refund for last year?", now_ms()),
                    answer="Yes, we refund every plan in full for any period, just ask.")
    outputs = await stage.process(turn, None, INVALID_SPAN)  # type: ignore[arg-type]
    assert outputs[-1].topic == settings.topics.outbound and outputs[-1].record.status == Status.ESCALATED
    assert [o.topic for o in outputs] == [settings.topics.escalations, settings.topics.outbound]
