"""Schema evolution: every released version stays readable by every later one (BACKWARD_TRANSITIVE).

Policy (``schemas/history/README.md``): every record schema in ``schemas/*.avsc`` keeps each released
version as ``schemas/history/<Record>/vN.avsc``, numbered from v1 without gaps, the newest equal to
the current file. The schemas are found by listing the folder, so a new ``.avsc`` is covered (and
fails here until its v1 is written). For each pair (older, newer) of a record's versions, a sample
written with the older one is decoded with the newer one as reader, and every field is compared: the
fields both have carry the written value, the fields only the reader has carry their default.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import parse_schema

import schemas

SCHEMA_DIR = Path(schemas.__file__).resolve().parent
CURRENT = {schemas.load_json(p)["name"]: p for p in sorted(SCHEMA_DIR.glob("*.avsc"))}


def versions(record: str) -> list[tuple[int, dict]]:
    """(number, schema) of every released version of ``record``, in version order."""
    folder = SCHEMA_DIR / "history" / record
    found = [(int(p.stem[1:]), schemas.load_json(p)) for p in folder.glob("v*.avsc") if p.stem[1:].isdigit()]
    return sorted(found, key=lambda v: v[0])


def contract(schema: Any) -> Any:
    """The schema without ``doc`` strings: what writers and readers depend on (names, types, defaults)."""
    if isinstance(schema, dict):
        return {k: contract(v) for k, v in schema.items() if k != "doc"}
    if isinstance(schema, list):
        return [contract(v) for v in schema]
    return schema


def _documented(schema: object) -> list[str]:
    """Names of record fields that lack a doc string (every field of the contract must have one)."""
    missing: list[str] = []
    if isinstance(schema, dict):
        if schema.get("type") == "record":
            for field in schema["fields"]:
                if not field.get("doc"):
                    missing.append(f"{schema['name']}.{field['name']}")
                missing.extend(_documented(field["type"]))
        for key in ("items", "values"):
            if key in schema:
                missing.extend(_documented(schema[key]))
    elif isinstance(schema, list):
        for branch in schema:
            missing.extend(_documented(branch))
    return missing


# --- samples and what a reader must make of them ----------------------------------------------------


def _kind(t: Any) -> str:
    """A type's identity for union branch matching: the primitive or the named type's name."""
    if isinstance(t, dict):
        return t["name"] if t["type"] in ("record", "enum", "fixed") else _kind(t["type"])
    return t


def sample(t: Any, name: str = "x") -> Any:
    """A value of type ``t`` with a distinctive value in every field (the first non-null union branch)."""
    if isinstance(t, list):
        branches = [b for b in t if b != "null"] or t
        return sample(branches[0], name)
    if isinstance(t, dict):
        kind = t["type"]
        if kind == "record":
            return {f["name"]: sample(f["type"], f["name"]) for f in t["fields"]}
        if kind == "array":
            return [sample(t["items"], name), sample(t["items"], name)]
        if kind == "map":
            return {"k1": sample(t["values"], name), "k2": sample(t["values"], name)}
        if kind == "enum":
            return t["symbols"][-1]
        return sample(kind, name)
    return {
        "string": f"{name}-written",
        "long": 1_700_000_000_123,
        "int": 7,
        "double": 0.25,
        "float": 0.5,
        "boolean": False,
        "bytes": b"\x00\xffwritten",
        "null": None,
    }[t]


def _timestamp(t: Any) -> bool:
    return isinstance(t, dict) and t.get("logicalType") == "timestamp-millis"


def default_of(t: Any, default: Any) -> Any:
    """A JSON default as the reader returns it (a union's default is of its first branch)."""
    if isinstance(t, list):
        return default_of(t[0], default)
    if _kind(t) == "bytes":
        return default.encode("latin-1")
    if _timestamp(t):
        return datetime.fromtimestamp(default / 1000, timezone.utc)
    return default


def expected_read(writer: Any, reader: Any, value: Any) -> Any:
    """What the reader schema must return for ``value`` written with the writer schema."""
    if isinstance(writer, list):
        written = next(b for b in writer if b != "null") if value is not None else "null"
        return expected_read(written, reader, value)
    if isinstance(reader, list):
        branch = next((b for b in reader if _kind(b) == _kind(writer)), None)
        assert branch is not None, f"no reader branch for {_kind(writer)} in {reader}"
        return expected_read(writer, branch, value)
    if isinstance(writer, dict) and writer["type"] == "record":
        assert isinstance(reader, dict) and reader["type"] == "record", (writer, reader)
        written = {f["name"]: f for f in writer["fields"]}
        out = {}
        for field in reader["fields"]:
            if field["name"] in written:
                out[field["name"]] = expected_read(written[field["name"]]["type"], field["type"], value[field["name"]])
            else:
                assert "default" in field, f"{reader['name']}.{field['name']} is new and has no default"
                out[field["name"]] = default_of(field["type"], field["default"])
        return out
    if isinstance(writer, dict) and writer["type"] == "array":
        return [expected_read(writer["items"], reader["items"], v) for v in value]
    if isinstance(writer, dict) and writer["type"] == "map":
        return {k: expected_read(writer["values"], reader["values"], v) for k, v in value.items()}
    if _timestamp(reader):
        return datetime.fromtimestamp(value / 1000, timezone.utc)
    return value


def roundtrip(writer: dict, reader: dict, record: dict) -> Any:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parse_schema(writer, _force=True), record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, parse_schema(writer, _force=True), parse_schema(reader, _force=True))


# --- the tests --------------------------------------------------------------------------------------


def test_the_schema_folder_is_the_registered_contract() -> None:
    """Listing the folder finds the records the codec registers (a new schema cannot be forgotten)."""
    assert set(CURRENT) >= set(schemas.CURRENT_FILES), set(schemas.CURRENT_FILES) - set(CURRENT)
    assert len(CURRENT) == len(list(SCHEMA_DIR.glob("*.avsc"))), "two .avsc files declare the same record name"


@pytest.mark.parametrize("record", sorted(CURRENT))
def test_every_field_documented_and_namespaced(record: str) -> None:
    schema = schemas.load_json(CURRENT[record])
    assert schema["namespace"] == "chatstream.v1"
    assert _documented(schema) == []


@pytest.mark.parametrize("record", sorted(CURRENT))
def test_released_versions_are_kept_in_order(record: str) -> None:
    """v1, v2, ... without gaps, each a real change from the one before, the newest equal to the current."""
    found = versions(record)
    assert found, (
        f"{record} has no released version: copy {CURRENT[record].name} to schemas/history/{record}/v1.avsc"
    )
    assert [n for n, _ in found] == list(range(1, len(found) + 1)), f"{record}: versions {[n for n, _ in found]}"
    for (n_old, old), (n_new, new) in zip(found, found[1:]):
        assert contract(old) != contract(new), f"{record}: v{n_new} changes nothing from v{n_old}"
    newest, current = found[-1], schemas.load_json(CURRENT[record])
    assert contract(newest[1]) == contract(current), (
        f"{record}: {CURRENT[record].name} differs from its newest released version v{newest[0]}; "
        f"copy it to schemas/history/{record}/v{newest[0] + 1}.avsc"
    )


@pytest.mark.parametrize("record", sorted(CURRENT))
def test_every_version_reads_every_older_one(record: str) -> None:
    """BACKWARD_TRANSITIVE, field by field: written values kept, new fields at their defaults."""
    found = versions(record)
    assert found, f"{record} has no released version"
    current = schemas.load_json(CURRENT[record])
    chain = [(f"v{n}", s) for n, s in found] + [("current", current)]
    pairs = list(combinations(chain, 2))
    for (old_name, old), (new_name, new) in pairs:
        record_value = sample(old)
        got = roundtrip(old, new, record_value)
        want = expected_read(old, new, record_value)
        assert got == want, f"{record}: data written with {old_name}, read with {new_name}:\n got {got}\nwant {want}"


def test_the_defaults_a_reader_fills_in_are_the_declared_ones() -> None:
    """ChatRequest v1 had no tenant: read with the current schema it is "default" (the declared default)."""
    (_, v1), *_ = versions("ChatRequest")
    assert "tenant" not in {f["name"] for f in v1["fields"]}
    record = sample(v1)
    got = roundtrip(v1, schemas.load_json(CURRENT["ChatRequest"]), record)
    assert got["tenant"] == "default"
    assert got["text"] == "text-written" and got["metadata"] == {"k1": "metadata-written", "k2": "metadata-written"}


def test_an_incompatible_change_is_caught() -> None:
    """The check can fail: a new field without a default cannot read old data."""
    (_, v1), *_ = versions("ChatRequest")
    broken = json.loads(json.dumps(v1))
    broken["fields"].append({"name": "required_new", "type": "string", "doc": "no default"})
    with pytest.raises(Exception):
        roundtrip(v1, broken, sample(v1))
    with pytest.raises(AssertionError, match="no default"):
        expected_read(v1, broken, sample(v1))
