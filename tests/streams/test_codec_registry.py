"""The Confluent wire format against a real Confluent-compatible registry (Apicurio, from Maven Central).

What a downstream team relies on when ``CHATSTREAM_SCHEMA_REGISTRY_URL`` is set: ``00`` + 4-byte
schema id + Avro body, our schemas registered under ``{topic}-value``, and bytes that a plain
``confluent_kafka.schema_registry.avro.AvroDeserializer`` reads. The registry is installed into
``~/.cache/chatstream`` on first use; if that cannot be done the tests fail with the reason.
"""

from __future__ import annotations

import io
import json
import struct
import time
import uuid
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro.schema import parse_schema, to_parsing_canonical_form
from registry_server import RegistryServer, ensure_installed, free_port, start

import schemas
from processors.records import (
    ChatDelta,
    ChatEscalation,
    ChatFeedback,
    ChatRequest,
    ChatResponse,
    ChatTurn,
    Citation,
    DeadLetter,
    FeedbackKind,
    HistoryTurn,
    KafkaHeader,
    Passage,
    Status,
    now_ms,
    to_avro,
)
from streams.codec import ConfluentCodec, DecodeError, RegistryUnavailable, make_codec, schema_id
from streams.config import Settings
from streams.errors import is_transient

pytestmark = pytest.mark.timeout(120)

TOPIC_FOR: dict[str, str | list[str]] = {
    "ChatRequest": "it.chat.inbound",
    "ChatTurn": ["it.chat.enriched", "it.chat.retrieved", "it.chat.generated"],
    "ChatResponse": "it.chat.outbound",
    "ChatEscalation": "it.chat.escalations",
    "DeadLetter": "it.chat.deadletter",
    "ChatFeedback": "it.chat.feedback",
    "ChatDelta": "it.chat.deltas",
}


def topics_of(name: str) -> list[str]:
    topics = TOPIC_FOR[name]
    return [topics] if isinstance(topics, str) else topics


def _registry_home() -> Path:
    try:
        return ensure_installed(Settings().cache_dir, out=lambda line: print(line, flush=True))
    except Exception as exc:  # noqa: BLE001 - any install failure must fail the tests, with its reason
        pytest.fail(f"cannot install Apicurio Registry from Maven Central: {exc}", pytrace=False)


def _start(home: Path, tmp: Path) -> RegistryServer:
    try:
        return start(home, tmp)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"cannot start Apicurio Registry: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def registry_home() -> Path:
    return _registry_home()


@pytest.fixture(scope="module")
def registry(registry_home: Path, tmp_path_factory: pytest.TempPathFactory):
    server = _start(registry_home, tmp_path_factory.mktemp("registry"))
    print(f"Apicurio Registry answered after {server.started_s:.1f} s at {server.url}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def codec(registry: RegistryServer) -> ConfluentCodec:
    return ConfluentCodec(registry.url, TOPIC_FOR)


@pytest.fixture(scope="module")
def client(registry: RegistryServer) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry.url})


def request(**kw) -> ChatRequest:
    base = dict(message_id=f"m-{uuid.uuid4().hex[:8]}", session_id="s1", user_id="u1", channel="web",
                text="where is my refund?", sent_at=now_ms(), metadata={"slack_channel": "C1"}, tenant="acme")
    base.update(kw)
    return ChatRequest(**base)


def every_record() -> list:
    req = request()
    turn = ChatTurn(
        request=req,
        history=[HistoryTurn("user", "hi", "m0", 1), HistoryTurn("assistant", "hello", "m0", 2)],
        summary="asked about refunds",
        passages=[Passage("refunds", "refunds#0", "Refunds", "kb/refunds.md", "Refunds take 5 days.", 0.82)],
        stage_ms={"enrich": 3, "retrieve": 12},
    )
    resp = ChatResponse.for_request(
        req, "Refunds take 5 days.", Status.ANSWERED, citations=[Citation("refunds", "Refunds", "kb/refunds.md", 0.82)],
        model="scripted", prompt_tokens=50, completion_tokens=7, groundedness=0.9, stage_ms={"generate": 40},
    )
    esc = ChatEscalation(req.message_id, req.session_id, req.user_id, req.channel, "user asked for a human",
                         transcript=[HistoryTurn("user", "human please", req.message_id, 3)], tenant="acme")
    letter = DeadLetter(b"s1", b"\xff\x00garbage", "chat.inbound", 1, 42, "enrich", "DecodeError", "bad bytes",
                        [KafkaHeader("traceparent", b"00-abc"), KafkaHeader("empty", None)], message_id=None)
    feedback = ChatFeedback(req.message_id, req.session_id, req.user_id, req.channel, FeedbackKind.CSAT, 4, "quick")
    delta = ChatDelta(req.message_id, req.session_id, req.channel, 3, " days.", True, metadata={"k": "v"})
    return [req, turn, resp, esc, letter, feedback, delta]


@pytest.mark.parametrize("record", every_record(), ids=lambda r: type(r).__name__)
def test_every_record_type_round_trips_with_magic_byte_and_registered_id(
    codec: ConfluentCodec, client: SchemaRegistryClient, record
) -> None:
    name = type(record).__name__
    data = codec.encode(record)
    latest = client.get_latest_version(f"{topics_of(name)[0]}-value")
    assert data[:1] == b"\x00"
    assert data[1:5] == struct.pack(">I", latest.schema_id) and schema_id(data) == latest.schema_id
    assert codec.decode(data, type(record)) == record


def test_subjects_are_topic_value_and_hold_our_schemas(codec: ConfluentCodec, client: SchemaRegistryClient) -> None:
    subjects = set(client.get_subjects())
    for name in TOPIC_FOR:
        ids = set()
        for topic in topics_of(name):
            subject = f"{topic}-value"
            assert subject in subjects, f"{subject} not registered (have {sorted(subjects)})"
            latest = client.get_latest_version(subject)
            assert latest.schema.schema_type in (None, "AVRO")
            ours = to_parsing_canonical_form(parse_schema(schemas.current(name), _force=True))
            theirs = to_parsing_canonical_form(parse_schema(json.loads(latest.schema.schema_str), _force=True))
            assert theirs == ours, f"{subject} holds another schema"
            ids.add(latest.schema_id)
        assert len(ids) == 1, f"{name} has different ids on its topics' subjects: {ids}"


def test_bytes_equal_what_confluents_own_serializer_writes(codec: ConfluentCodec, client: SchemaRegistryClient) -> None:
    req = request()
    serializer = AvroSerializer(client, json.dumps(schemas.current("ChatRequest")), lambda obj, ctx: to_avro(obj))
    theirs = serializer(req, SerializationContext(topics_of("ChatRequest")[0], MessageField.VALUE))
    assert codec.encode(req) == theirs


def test_turn_on_another_topic_registers_that_topics_subject(codec: ConfluentCodec, client: SchemaRegistryClient) -> None:
    turn = every_record()[1]
    data = codec.encode(turn, topic="it.replay.enriched")
    assert "it.replay.enriched-value" in client.get_subjects()
    assert codec.decode(data, ChatTurn) == turn


def test_reads_a_record_an_older_producer_wrote(codec: ConfluentCodec, client: SchemaRegistryClient) -> None:
    """Schema evolution through the registry: v1 ChatRequest (no tenant) read into the current class."""
    old = schemas.history("ChatRequest")[0]
    old_id = client.register_schema("it.old-producer-value", Schema(json.dumps(old), "AVRO"))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parse_schema(old, _force=True), dict(
        message_id="m-old", session_id="s", user_id="u", channel="web", text="old", sent_at=1, metadata={}))
    decoded = codec.decode(b"\x00" + struct.pack(">I", old_id) + body.getvalue(), ChatRequest)
    assert (decoded.message_id, decoded.text, decoded.tenant) == ("m-old", "old", "default")


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "not Confluent wire format: starts with nothing"),
        (b'{"text": "json"}', "not Confluent wire format: starts with 7b22746578"),
        (b"\x00\x00\x01", "not Confluent wire format"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "single-object encoding"),
        (b"\x00\x7f\xff\xff\x00" + b"\x02x", "schema id 2147483392 is unknown to the schema registry"),
    ],
    ids=["empty", "json", "short", "single-object", "unknown-id"],
)
def test_bad_bytes_raise_a_clear_decode_error(codec: ConfluentCodec, data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        codec.decode(data, ChatRequest)


def test_wrong_type_truncated_and_trailing_bytes(codec: ConfluentCodec) -> None:
    data = codec.encode(request(text="x" * 100))
    with pytest.raises(DecodeError, match="record is a ChatRequest .*expected ChatResponse"):
        codec.decode(data, ChatResponse)
    with pytest.raises(DecodeError, match="cannot read ChatRequest body"):
        codec.decode(data[:-20], ChatRequest)
    with pytest.raises(DecodeError, match="1 trailing bytes"):
        codec.decode(data + b"\x00", ChatRequest)
    with pytest.raises(DecodeError, match="tombstone"):
        codec.decode(None, ChatRequest)  # type: ignore[arg-type]


def test_unreachable_registry_is_transient_not_a_decode_error() -> None:
    with pytest.raises(RegistryUnavailable) as caught:
        ConfluentCodec(f"http://127.0.0.1:{free_port()}", TOPIC_FOR, timeout_s=2)
    assert is_transient(caught.value) and not isinstance(caught.value, DecodeError)
    assert "unreachable registering" in str(caught.value)


def test_registry_going_down_keeps_known_ids_and_never_dead_letters(
    registry_home: Path, tmp_path: Path
) -> None:
    """A second, private registry that the test stops: cached ids still decode, new ids wait."""
    server = _start(registry_home, tmp_path)
    try:
        ours = ConfluentCodec(server.url, TOPIC_FOR, timeout_s=2)
        other = SchemaRegistryClient({"url": server.url})
        old = schemas.history("ChatRequest")[0]
        unseen_id = other.register_schema("it.other-producer-value", Schema(json.dumps(old), "AVRO"))
        req = request()
        data = ours.encode(req)
    finally:
        server.stop()
    assert ours.decode(data, ChatRequest) == req  # id known since registration: no registry call
    assert ours.encode(req) == data
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parse_schema(old, _force=True), dict(
        message_id="m", session_id="s", user_id="u", channel="web", text="t", sent_at=1, metadata={}))
    with pytest.raises(RegistryUnavailable) as caught:
        ours.decode(b"\x00" + struct.pack(">I", unseen_id) + body.getvalue(), ChatRequest)
    assert is_transient(caught.value)


@pytest.mark.stack
def test_downstream_avro_deserializer_reads_what_the_pipeline_produces(registry: RegistryServer) -> None:
    """End to end as another team would: produce via make_codec, read with a plain AvroDeserializer."""
    from confluent_kafka.admin import AdminClient

    from streams.topics import create_topics

    settings = Settings(topic_prefix=f"t{uuid.uuid4().hex[:10]}.", schema_registry_url=registry.url,
                        otlp_endpoint=None)
    create_topics(settings)
    try:
        codec = make_codec(settings)
        assert isinstance(codec, ConfluentCodec)
        req = request()
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        producer.produce(settings.topics.inbound, codec.encode(req), key=req.session_id)
        assert producer.flush(15) == 0

        deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry.url}))  # writer schema only
        consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"downstream-{uuid.uuid4().hex}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([settings.topics.inbound])
        try:
            msg, deadline = None, time.monotonic() + 30
            while msg is None and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error():
                    pytest.fail(f"consumer error: {msg.error()}")
        finally:
            consumer.close()
        assert msg is not None, f"nothing arrived on {settings.topics.inbound} within 30 s"
        value = deserializer(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
        sent_at = value.pop("sent_at")  # timestamp-millis: a downstream reader gets a datetime
        assert int(sent_at.timestamp() * 1000) == req.sent_at
        assert value == {k: v for k, v in to_avro(req).items() if k != "sent_at"}
        assert msg.key() == req.session_id.encode()
        subjects = set(SchemaRegistryClient({"url": registry.url}).get_subjects())
        t = settings.topics
        for topic in (t.inbound, t.enriched, t.retrieved, t.generated, t.outbound, t.escalations, t.deadletter, t.feedback):
            assert f"{topic}-value" in subjects
        assert codec.decode(msg.value(), ChatRequest) == req
    finally:
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        for future in admin.delete_topics(settings.topics.all(), operation_timeout=30).values():
            try:
                future.result()
            except Exception:  # noqa: BLE001 - best-effort cleanup of a private namespace
                pass


def test_every_record_type_needs_a_known_topic_before_any_registry_call() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: these must fail before asking it
    partial = {k: v for k, v in TOPIC_FOR.items() if k != "DeadLetter"}
    with pytest.raises(ValueError, match="no topic given for DeadLetter"):
        ConfluentCodec(url, partial)
    with pytest.raises(ValueError, match="not chatstream record types: Passage"):
        ConfluentCodec(url, {**TOPIC_FOR, "Passage": "x"})
    with pytest.raises(ValueError, match="no topic given for ChatTurn"):
        ConfluentCodec(url, {**TOPIC_FOR, "ChatTurn": []})
