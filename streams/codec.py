"""Avro encoding of chatstream records on Kafka.

Default: Avro single-object encoding (``C3 01`` + CRC-64-AVRO fingerprint + body), writer schemas
resolved by fingerprint from ``schemas/``, so a consumer needs nothing but the ``.avsc`` files and no
registry can be a point of failure. With a schema registry configured, the Confluent wire format.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from collections.abc import Sequence
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
    def encode(self, record: Any, topic: str | None = None) -> bytes: ...

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

    def encode(self, record: Any, topic: str | None = None) -> bytes:
        """``topic`` is unused: the writer schema travels by fingerprint, not by subject."""
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


class RegistryUnavailable(ConnectionError):
    """The schema registry could not answer (down, slow, refusing our credentials).

    Nothing is wrong with the record: a stage must wait and retry, never dead-letter it. It is a
    ``ConnectionError`` with ``transient = True`` so ``streams.errors.is_transient`` accepts it.
    """

    transient = True


class SchemaRejected(ValueError):
    """The registry refused to register one of our schemas (an incompatible change): fix the schema."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network-level errors of whichever HTTP library confluent_kafka.schema_registry runs on."""
    found: list[type[BaseException]] = []
    for module in ("httpx2", "httpx"):
        try:
            found.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


class ConfluentCodec:
    """Confluent wire format: ``00`` + 4-byte big-endian schema id + Avro body, schemas in a registry.

    Each record type's current schema is registered under ``{topic}-value`` (TopicNameStrategy, the
    subject Confluent's serializers use and downstream ``AvroDeserializer``s look under) when the codec
    is built. So a running stage encodes without a registry round trip (no blocking call on the event
    loop), and a registry that is down or refuses a schema stops the process at start with the reason
    instead of failing turns one by one. Writer schemas of records other producers wrote are fetched by
    id on first sight and cached; records are read with Avro schema resolution into our current schema.
    """

    def __init__(
        self, registry_url: str, topic_for: dict[str, str | Sequence[str]], *, timeout_s: float = 10.0
    ) -> None:
        """``topic_for``: record type -> its topic, or every topic it goes to (the first is the default
        for ``encode``); each gets its ``{topic}-value`` subject, so a downstream reader finds the
        subject of the topic it reads. A registry serving ids by content (Confluent's, Apicurio's
        ccompat API) gives every such subject the same id, so the bytes do not depend on the topic."""
        from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

        missing = sorted(set(schemas.CURRENT_FILES) - set(topic_for))
        if missing:
            raise ValueError(f"no topic given for {', '.join(missing)}: the subject is '{{topic}}-value'")
        unknown = sorted(set(topic_for) - set(schemas.CURRENT_FILES))
        if unknown:
            raise ValueError(f"not chatstream record types: {', '.join(unknown)}")
        self._url = registry_url
        # Few, short retries: a stage retries transient failures itself, with back-off, off the hot path.
        self._client = SchemaRegistryClient(
            {"url": registry_url, "timeout": timeout_s, "max.retries": 1, "retries.wait.ms": 200}
        )
        self._transport_errors = _transport_errors()
        topics = {name: [t] if isinstance(t, str) else list(t) for name, t in topic_for.items()}
        empty = sorted(name for name, names in topics.items() if not names)
        if empty:
            raise ValueError(f"no topic given for {', '.join(empty)}")
        self._topic_for = {name: names[0] for name, names in topics.items()}
        self._schema: dict[str, Any] = {}
        self._parsed: dict[str, Any] = {}
        for name in schemas.CURRENT_FILES:
            current = schemas.current(name)
            self._schema[name] = Schema(json.dumps(current), "AVRO")
            self._parsed[name] = parse_schema(current, _force=True)
        self._full_name = {name: parsed["name"] for name, parsed in self._parsed.items()}
        self._by_full_name = {full: name for name, full in self._full_name.items()}
        self._ids: dict[tuple[str, str], int] = {}  # (record type, subject) -> schema id
        self._writers: dict[int, tuple[str, Any]] = {}  # schema id -> (record type, parsed writer schema)
        self._lock = threading.Lock()  # encode/decode may run in worker threads
        for name, names in topics.items():
            for topic in names:
                self._register(name, f"{topic}-value")

    @property
    def registry_url(self) -> str:
        return self._url

    def subject_for(self, record_type: str, topic: str | None = None) -> str:
        return f"{topic or self._topic_for[record_type]}-value"

    def _register(self, name: str, subject: str) -> int:
        """Schema id of ``name``'s current schema under ``subject``, registering it the first time."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        with self._lock:
            known = self._ids.get((name, subject))
        if known is not None:
            return known
        try:
            registered = self._client.register_schema_full_response(subject, self._schema[name])
        except SchemaRegistryError as exc:
            if exc.http_status_code in (409, 422):
                raise SchemaRejected(
                    f"schema registry {self._url} refused {name} under subject {subject}: {exc}"
                ) from exc
            raise RegistryUnavailable(f"schema registry {self._url} failed registering {subject}: {exc}") from exc
        except self._transport_errors as exc:
            raise RegistryUnavailable(
                f"schema registry {self._url} unreachable registering {subject}: {type(exc).__name__}: {exc}"
            ) from exc
        schema_id = int(registered.schema_id)
        parsed = self._parsed[name]
        with self._lock:
            self._ids[(name, subject)] = schema_id
            self._writers.setdefault(schema_id, (name, parsed))
        return schema_id

    def encode(self, record: Any, topic: str | None = None) -> bytes:
        """Frame ``record``; ``topic`` picks the subject when a type goes to several topics (ChatTurn)."""
        name = type(record).__name__
        if name not in self._parsed:
            raise TypeError(f"{name} is not a chatstream record type (known: {', '.join(self._parsed)})")
        schema_id = self._register(name, self.subject_for(name, topic))
        buf = io.BytesIO()
        buf.write(b"\x00" + struct.pack(">I", schema_id))
        fastavro.schemaless_writer(buf, self._parsed[name], to_avro(record))
        return buf.getvalue()

    def _writer(self, schema_id: int) -> tuple[str, Any]:
        """Record type and parsed writer schema for ``schema_id`` (one registry lookup, then cached)."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        with self._lock:
            known = self._writers.get(schema_id)
        if known is not None:
            return known
        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise DecodeError(f"schema id {schema_id} is unknown to the schema registry {self._url}") from exc
            raise RegistryUnavailable(f"schema registry {self._url} failed looking up id {schema_id}: {exc}") from exc
        except self._transport_errors as exc:
            raise RegistryUnavailable(
                f"schema registry {self._url} unreachable looking up id {schema_id}: {type(exc).__name__}: {exc}"
            ) from exc
        if (schema.schema_type or "AVRO") != "AVRO" or not schema.schema_str:
            raise DecodeError(f"schema id {schema_id} is a {schema.schema_type} schema, not Avro")
        try:
            parsed = parse_schema(json.loads(schema.schema_str), _force=True)
        except Exception as exc:  # a registry may hold schemas fastavro cannot parse
            raise DecodeError(f"schema id {schema_id} cannot be parsed: {type(exc).__name__}: {exc}") from exc
        full = parsed.get("name") if isinstance(parsed, dict) else None
        name = self._by_full_name.get(full or "")
        if name is None:
            raise DecodeError(f"schema id {schema_id} is {full or schema.schema_str[:40]!r}, not a chatstream record")
        with self._lock:
            self._writers[schema_id] = (name, parsed)
        return name, parsed

    def decode(self, data: bytes, expected: type[T]) -> T:
        if data is None:
            raise DecodeError("record has no value (tombstone)")
        if len(data) < 5 or data[:1] != b"\x00":
            hint = ""
            if bytes(data[:2]) == MAGIC:
                hint = " (this is Avro single-object encoding: its producer runs without a schema registry URL)"
            raise DecodeError(
                "not Confluent wire format: starts with "
                f"{bytes(data[:5]).hex() or 'nothing'}, expected 00 + a 4-byte schema id{hint}"
            )
        sid = schema_id(data)
        name, writer = self._writer(sid)
        if RECORD_TYPES[name] is not expected:
            raise DecodeError(f"record is a {name} (schema id {sid}), expected {expected.__name__}")
        buf = io.BytesIO(data[5:])
        try:
            value = fastavro.schemaless_reader(buf, writer, self._parsed[name])
        except Exception as exc:  # fastavro raises many types on truncated/garbled bodies
            raise DecodeError(f"cannot read {name} body (schema id {sid}): {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(data) - 5:
            raise DecodeError(f"{len(data) - 5 - buf.tell()} trailing bytes after the {name} body")
        return from_avro(expected, value)  # type: ignore[arg-type]


def schema_id(data: bytes) -> int:
    """Schema id of a Confluent-framed record (for diagnostics)."""
    return struct.unpack(">I", data[1:5])[0]


def make_codec(settings: Any) -> Codec:
    """The codec the settings ask for; every producer and consumer in a deployment must agree."""
    if settings.schema_registry_url:
        t = settings.topics
        topic_for: dict[str, str | Sequence[str]] = {
            "ChatRequest": t.inbound,
            "ChatTurn": [t.enriched, t.retrieved, t.generated],
            "ChatResponse": t.outbound,
            "ChatEscalation": t.escalations,
            "DeadLetter": t.deadletter,
            "ChatFeedback": t.feedback,
            "ChatDelta": t.deltas,
        }
        return ConfluentCodec(settings.schema_registry_url, topic_for)
    return SingleObjectCodec()
