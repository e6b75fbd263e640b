"""Finished spans as the bytes of an OTLP ``ExportTraceServiceRequest``, written directly.

Why: the SDK's OTLP exporters (gRPC and http/protobuf alike) build one protobuf object per span,
per attribute and per attribute value in Python (``opentelemetry.exporter.otlp.proto.common``) and
hash the resource through ``json.dumps`` for every span; measured here, 40-70 us of CPU per
exported span, more than the span cost to create. Every turn is traced (about 12 worker spans per
turn), so this was a large part of tracing's CPU. Writing the protobuf wire format directly
(field tags, varints, length prefixes, attribute keys encoded once) gives the same bytes for a
fraction of that (see ``chatstream dev tracing-cpu``).

The output is byte for byte what ``encode_spans(spans).SerializeToString()`` gives (tests compare
them over every field and attribute type), so a receiver cannot tell the difference; an attribute
that the SDK's encoder would refuse (an unknown type, an int beyond int64) is skipped the same way.

Message layouts (opentelemetry-proto, trace/v1, common/v1, resource/v1), by field number:
ExportTraceServiceRequest{1 resource_spans}; ResourceSpans{1 resource, 2 scope_spans, 3 schema_url};
Resource{1 attributes, 2 dropped}; ScopeSpans{1 scope, 2 spans, 3 schema_url};
InstrumentationScope{1 name, 2 version, 3 attributes}; Span{1 trace_id, 2 span_id, 3 trace_state,
4 parent_span_id, 5 name, 6 kind, 7 start (fixed64), 8 end (fixed64), 9 attributes, 10 dropped
attributes, 11 events, 12 dropped events, 13 links, 14 dropped links, 15 status, 16 flags (fixed32)};
Event{1 time (fixed64), 2 name, 3 attributes, 4 dropped}; Link{1 trace_id, 2 span_id, 3 trace_state,
4 attributes, 5 dropped, 6 flags (fixed32)}; Status{2 message, 3 code}; KeyValue{1 key, 2 value};
AnyValue{1 string, 2 bool, 3 int64, 4 double, 5 array, 6 kvlist, 7 bytes}; ArrayValue{1 values};
KeyValueList{1 values}.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

log = logging.getLogger(__name__)

_KIND = {SpanKind.INTERNAL: b"\x30\x01", SpanKind.SERVER: b"\x30\x02", SpanKind.CLIENT: b"\x30\x03",
         SpanKind.PRODUCER: b"\x30\x04", SpanKind.CONSUMER: b"\x30\x05"}
_FLAGS_LOCAL_PARENT = b"\x85\x01" + struct.pack("<I", 0x100)  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE
_FLAGS_REMOTE_PARENT = b"\x85\x01" + struct.pack("<I", 0x300)  # ... and CONTEXT_IS_REMOTE
_LINK_FLAGS_LOCAL = b"\x35" + struct.pack("<I", 0x100)
_LINK_FLAGS_REMOTE = b"\x35" + struct.pack("<I", 0x300)
_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
_SMALL = [bytes((n,)) for n in range(128)]
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_KEY_CACHE_MAX = 4096  # attribute names are few; a runaway producer of names must not grow memory


def varint(n: int) -> bytes:
    """Unsigned base-128 varint (``n`` >= 0)."""
    if n < 0x80:
        return _SMALL[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + varint(len(payload)) + payload


def _text(tag: bytes, value: str | None) -> bytes:
    """A proto3 string field: absent when empty."""
    return _field(tag, value.encode()) if value else b""


_key_prefixes: dict[str, bytes] = {}


def _key(key: str) -> bytes:
    prefix = _key_prefixes.get(key)
    if prefix is None:
        prefix = _field(b"\x0a", key.encode())
        if len(_key_prefixes) < _KEY_CACHE_MAX:
            _key_prefixes[key] = prefix
    return prefix


def _any_value(value: Any) -> bytes:
    """An AnyValue message's bytes (without its own tag and length), as the SDK's ``_encode_value``."""
    kind = type(value)
    if kind is str:
        return _field(b"\x0a", value.encode())
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"int attribute {value} does not fit int64")
        return b"\x18" + varint(value & 0xFFFFFFFFFFFFFFFF)
    if kind is float:
        return b"\x21" + _double(value)
    # the SDK's order of checks, for subclasses and the rarer types
    if value is None:
        return b""
    if isinstance(value, bool):
        return _any_value(bool(value))
    if isinstance(value, str):
        return _any_value(str(value))
    if isinstance(value, int):
        return _any_value(int(value))
    if isinstance(value, float):
        return _any_value(float(value))
    if isinstance(value, bytes):
        return _field(b"\x3a", bytes(value))
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    return _key(key) + _field(b"\x12", _any_value(value))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated KeyValue under ``tag``; an attribute the SDK's encoder refuses is skipped, logged."""
    if not attributes:
        return b""
    parts = []
    for key, value in attributes.items():
        try:
            parts.append(_field(tag, _key_value(key, value)))
        except Exception as exc:  # noqa: BLE001 - the SDK's encoder skips such an attribute too
            log.exception("Failed to encode key %s: %s", key, exc)
    return b"".join(parts)


def _count(tag: bytes, n: int) -> bytes:
    return tag + varint(n) if n else b""


def _trace_state(state: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in state.items()) if state is not None else ""


def encode_span(span: ReadableSpan) -> bytes:
    """One Span message's bytes (without its tag and length)."""
    context = span.get_span_context()
    parts = [b"\x0a\x10", context.trace_id.to_bytes(16, "big"), b"\x12\x08", context.span_id.to_bytes(8, "big")]
    if context.trace_state:
        parts.append(_text(b"\x1a", _trace_state(context.trace_state)))
    parent = span.parent
    if parent:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_field(b"\x2a", span.name.encode()))
    parts.append(_KIND[span.kind])
    if span.start_time:
        parts += (b"\x39", _fixed64(span.start_time))
    if span.end_time:
        parts += (b"\x41", _fixed64(span.end_time))
    parts.append(_attributes(b"\x4a", span.attributes))
    parts.append(_count(b"\x50", span.dropped_attributes))
    for event in span.events:
        body = b""
        if event.timestamp:
            body += b"\x09" + _fixed64(event.timestamp)
        body += _text(b"\x12", event.name) + _attributes(b"\x1a", event.attributes)
        body += _count(b"\x20", event.dropped_attributes)
        parts.append(_field(b"\x5a", body))
    parts.append(_count(b"\x60", span.dropped_events))
    for link in span.links:
        body = b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big") + b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
        body += _attributes(b"\x22", link.attributes) + _count(b"\x28", link.dropped_attributes)
        body += _LINK_FLAGS_REMOTE if link.context.is_remote else _LINK_FLAGS_LOCAL
        parts.append(_field(b"\x6a", body))
    parts.append(_count(b"\x70", span.dropped_links))
    status = span.status
    if status is not None:
        code = status.status_code.value
        parts.append(_field(b"\x7a", _text(b"\x12", status.description) + (b"\x18" + varint(code) if code else b"")))
    parts.append(_FLAGS_REMOTE_PARENT if parent is not None and parent.is_remote else _FLAGS_LOCAL_PARENT)
    return b"".join(parts)


# Resources and instrumentation scopes are a handful of long-lived objects shared by every span:
# encoded once each, looked up by identity (the cache holds a reference, so an id is never reused).
_resources: dict[int, tuple[Any, bytes]] = {}
_scopes: dict[int, tuple[Any, bytes]] = {}
_IDENTITY_CACHE_MAX = 1024


def _cached(cache: dict[int, tuple[Any, bytes]], obj: Any, encode) -> bytes:  # type: ignore[no-untyped-def]
    found = cache.get(id(obj))
    if found is not None and found[0] is obj:
        return found[1]
    encoded = encode(obj)
    if len(cache) < _IDENTITY_CACHE_MAX:
        cache[id(obj)] = (obj, encoded)
    return encoded


def _resource(resource: Any) -> bytes:
    """The ResourceSpans fields that come from the resource: ``resource`` and ``schema_url``."""
    return _field(b"\x0a", _attributes(b"\x0a", resource.attributes))


def _scope(scope: Any) -> bytes:
    """The ScopeSpans ``scope`` field (present even for no scope, as the SDK writes it)."""
    if scope is None:
        return b"\x0a\x00"
    body = _text(b"\x0a", scope.name) + _text(b"\x12", scope.version) + _attributes(b"\x1a", scope.attributes)
    return _field(b"\x0a", body)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """An ``ExportTraceServiceRequest``: spans grouped by resource, then instrumentation scope."""
    groups: dict[tuple[bytes, str], dict[tuple[bytes, str], list[bytes]]] = {}
    for span in spans:
        resource = span.resource
        scope = span.instrumentation_scope or None
        resource_key = (_cached(_resources, resource, _resource), resource.schema_url or "")
        scope_key = (_cached(_scopes, scope, _scope) if scope is not None else _scope(None),
                     (scope.schema_url or "") if scope is not None else "")
        encoded = encode_span(span)
        groups.setdefault(resource_key, {}).setdefault(scope_key, []).append(
            b"\x12" + varint(len(encoded)) + encoded
        )
    out = []
    for (resource_bytes, resource_schema), scopes in groups.items():
        scope_spans = b"".join(
            _field(b"\x12", scope_bytes + b"".join(encoded_spans) + _text(b"\x1a", scope_schema))
            for (scope_bytes, scope_schema), encoded_spans in scopes.items()
        )
        out.append(_field(b"\x0a", resource_bytes + scope_spans + _text(b"\x1a", resource_schema)))
    return b"".join(out)
