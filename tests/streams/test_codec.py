"""Avro single-object encoding: the wire contract other teams depend on."""

from __future__ import annotations

import struct

import pytest
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

import schemas
from processors.records import ChatDelta, ChatRequest, ChatResponse, ChatTurn, Citation, DeadLetter, KafkaHeader, Passage, Status, now_ms
from streams.codec import DecodeError, SingleObjectCodec, schema_fingerprint


@pytest.fixture(scope="module")
def codec() -> SingleObjectCodec:
    return SingleObjectCodec()


def request(**kw) -> ChatRequest:
    base = dict(message_id="m1", session_id="s1", user_id="u1", channel="web", text="hello", sent_at=now_ms())
    base.update(kw)
    return ChatRequest(**base)


def test_header_is_magic_plus_little_endian_crc64_of_canonical_form(codec: SingleObjectCodec) -> None:
    data = codec.encode(request())
    pcf = to_parsing_canonical_form(parse_schema(schemas.current("ChatRequest")))
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == bytes.fromhex(fingerprint(pcf, "CRC-64-AVRO"))
    # the spec's example: fingerprint of "null" is 0x63dd24e7cc258f8a, written little-endian
    assert schema_fingerprint("null") == struct.pack("<Q", 0x63DD24E7CC258F8A)


def test_round_trips(codec: SingleObjectCodec) -> None:
    req = request(metadata={"slack_channel": "C1"}, tenant="acme")
    assert codec.decode(codec.encode(req), ChatRequest) == req
    turn = ChatTurn(request=req, passages=[Passage("d", "d#0", "T", "kb/d.md", "text", 0.7)], stage_ms={"enrich": 3})
    assert codec.decode(codec.encode(turn), ChatTurn) == turn
    resp = ChatResponse.for_request(req, "hi", Status.ANSWERED, citations=[Citation("d", "T", "kb/d.md", 0.7)])
    assert codec.decode(codec.encode(resp), ChatResponse) == resp
    letter = DeadLetter(b"k", b"\xff", "chat.inbound", 1, 2, "enrich", "DecodeError", "bad", [KafkaHeader("h", b"v")])
    assert codec.decode(codec.encode(letter), DeadLetter) == letter
    delta = ChatDelta(req.message_id, req.session_id, req.channel, 0, "Hel", False, metadata={"slack_channel": "C1"})
    assert codec.decode(codec.encode(delta), ChatDelta) == delta


def test_reads_records_written_with_an_older_schema(codec: SingleObjectCodec) -> None:
    import io

    import fastavro

    old = schemas.history("ChatRequest")[0]
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body,
        parse_schema(old),
        dict(message_id="m", session_id="s", user_id="u", channel="web", text="t", sent_at=1, metadata={}),
    )
    data = b"\xc3\x01" + schema_fingerprint(old) + body.getvalue()
    decoded = codec.decode(data, ChatRequest)
    assert decoded.tenant == "default" and decoded.text == "t"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "not Avro single-object"),
        (b"{\"text\": \"json\"}", "not Avro single-object"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown writer schema"),
    ],
)
def test_bad_bytes_are_explained(codec: SingleObjectCodec, data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        codec.decode(data, ChatRequest)


def test_truncated_and_wrong_record_types(codec: SingleObjectCodec) -> None:
    data = codec.encode(request(text="x" * 100))
    with pytest.raises(DecodeError, match="cannot read ChatRequest"):
        codec.decode(data[:-20], ChatRequest)
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(data + b"\x00", ChatRequest)
    with pytest.raises(DecodeError, match="is a ChatRequest, expected ChatResponse"):
        codec.decode(data, ChatResponse)
