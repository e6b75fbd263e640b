"""Avro encoding of chatstream records on Kafka.

Default: Avro single-object encoding (``C3 01`` + CRC-64-AVRO fingerprint + body), writer schemas
resolved by fingerprint from ``schemas/``, so a consumer needs nothing but the ``.avsc`` files and no
registry can be a point of failure. With a schema registry configured, the Confluent wire format.
"""

from __future__ import annotations

import io
import struct
from typing import Any, Protocol, TypeVar

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

import schemas
from processors.records import RECORD_TYPES, from_avro, to_avro

MAGIC = b"\xc3\x01"
T = TypeVar("T")


class DecodeError(ValueError):
    """The bytes are not a chatstream record this consumer can read; never retried."""


class Codec(Protocol):
    def encode(self, record: Any) -> bytes: ...

    def decode(self, data: bytes, expected: type[T]) -> T: ...


def schema_fingerprint(schema: dict) -> bytes:
    """CRC-64-AVRO of the parsing canonical form, little-endian, as the spec's single-object header."""
    pcf = to_parsing_canonical_form(parse_schema(schema, _write_hint=False, _force=True))
    return bytes.fromhex(fingerprint(pcf, "CRC-64-AVRO"))


class SingleObjectCodec:
    """Avro single-object encoding with writer schemas looked up by fingerprint."""

    def __init__(self) -> None:
        self._writers: dict[str, tuple[bytes, Any]] = {}
        self._readers: dict[str, Any] = {}
        self._by_fingerprint: dict[bytes, tuple[str, Any]] = {}
        for name in schemas.CURRENT_FILES:
            current = schemas.current(name)
            parsed = parse_schema(current, _force=True)
            fp = schema_fingerprint(current)
            self._writers[name] = (MAGIC + fp, parsed)
            self._readers[name] = parsed
            self._by_fingerprint[fp] = (name, parsed)
            for old in schemas.history(name):
                self._by_fingerprint.setdefault(schema_fingerprint(old), (name, parse_schema(old, _force=True)))

    def encode(self, record: Any) -> bytes:
        name = type(record).__name__
        header, parsed = self._writers[name]
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, parsed, to_avro(record))
        return buf.getvalue()

    def decode(self, data: bytes, expected: type[T]) -> T:
        if data is None:
            raise DecodeError("record has no value (tombstone)")
        if len(data) < 10 or data[:2] != MAGIC:
            raise DecodeError(
                f"not Avro single-object encoding: starts with {bytes(data[:2]).hex() or 'nothing'}, expected c301"
            )
        fp = bytes(data[2:10])
        known = self._by_fingerprint.get(fp)
        if known is None:
            raise DecodeError(f"unknown writer schema fingerprint {fp.hex()}: not in schemas/")
        name, writer = known
        if RECORD_TYPES[name] is not expected:
            raise DecodeError(f"record is a {name}, expected {expected.__name__}")
        buf = io.BytesIO(data[10:])
        try:
            value = fastavro.schemaless_reader(buf, writer, self._readers[name])
        except Exception as exc:  # fastavro raises many types on truncated/garbled bodies
            raise DecodeError(f"cannot read {name} body: {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(data) - 10:
            raise DecodeError(f"{len(data) - 10 - buf.tell()} trailing bytes after the {name} body")
        return from_avro(expected, value)  # type: ignore[arg-type]


class ConfluentCodec:
    """Confluent wire format (``00`` + schema id) through ``confluent_kafka.schema_registry``."""

    def __init__(self, registry_url: str, topic_for: dict[str, str]) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        self._ctx = lambda topic: SerializationContext(topic, MessageField.VALUE)
        client = SchemaRegistryClient({"url": registry_url})
        self._topic_for = topic_for
        self._ser: dict[str, Any] = {}
        self._de: dict[str, Any] = {}
        for name in schemas.CURRENT_FILES:
            import json

            text = json.dumps(schemas.current(name))
            self._ser[name] = AvroSerializer(client, text, to_dict=lambda obj, ctx: to_avro(obj))
            self._de[name] = AvroDeserializer(client, text)

    def encode(self, record: Any) -> bytes:
        name = type(record).__name__
        return self._ser[name](record, self._ctx(self._topic_for.get(name, name)))

    def decode(self, data: bytes, expected: type[T]) -> T:
        if not data or data[:1] != b"\x00" or len(data) < 5:
            raise DecodeError("not Confluent wire format (magic byte 00 + schema id)")
        name = expected.__name__
        try:
            value = self._de[name](data, self._ctx(self._topic_for.get(name, name)))
        except Exception as exc:
            raise DecodeError(f"cannot read {name}: {type(exc).__name__}: {exc}") from exc
        return from_avro(expected, value)  # type: ignore[arg-type]


def schema_id(data: bytes) -> int:
    """Schema id of a Confluent-framed record (for diagnostics)."""
    return struct.unpack(">I", data[1:5])[0]


def make_codec(settings: Any) -> Codec:
    """The codec the settings ask for; every producer and consumer in a deployment must agree."""
    if settings.schema_registry_url:
        t = settings.topics
        topic_for = {
            "ChatRequest": t.inbound,
            "ChatTurn": t.enriched,
            "ChatResponse": t.outbound,
            "ChatEscalation": t.escalations,
            "DeadLetter": t.deadletter,
            "ChatFeedback": t.feedback,
        }
        return ConfluentCodec(settings.schema_registry_url, topic_for)
    return SingleObjectCodec()
