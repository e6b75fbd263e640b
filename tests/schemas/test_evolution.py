"""BACKWARD_TRANSITIVE: the current schema reads data written with every version kept in the repo."""

from __future__ import annotations

import io
import json

import fastavro
import pytest
from fastavro.schema import parse_schema

import schemas


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


@pytest.mark.parametrize("name", sorted(schemas.CURRENT_FILES))
def test_every_field_documented_and_namespaced(name: str) -> None:
    schema = schemas.current(name)
    assert schema["namespace"] == "chatstream.v1"
    assert _documented(schema) == []


@pytest.mark.parametrize("name", sorted(schemas.CURRENT_FILES))
def test_current_reads_all_history(name: str) -> None:
    """A sample of every historical version decodes with the current schema as reader."""
    current = parse_schema(schemas.current(name))
    versions = schemas.history(name)
    for old_json in versions:
        old = parse_schema(old_json)
        for record in _samples(old_json):
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, old, record)
            buf.seek(0)
            fastavro.schemaless_reader(buf, old, current)  # raises on incompatibility


def test_history_versions_are_in_order_and_distinct() -> None:
    for name in schemas.CURRENT_FILES:
        texts = [json.dumps(v, sort_keys=True) for v in schemas.history(name)]
        assert len(set(texts)) == len(texts), f"{name}: a history version equals another one"
        current = json.dumps(schemas.current(name), sort_keys=True)
        # the current schema is either the newest kept version (v1 of a new record) or a new one
        assert current not in texts[:-1], f"{name}: the current schema equals an older version"


def test_new_fields_need_defaults() -> None:
    for name in schemas.CURRENT_FILES:
        current = schemas.current(name)
        for old in schemas.history(name):
            old_fields = {f["name"] for f in old["fields"]}
            for field in current["fields"]:
                if field["name"] not in old_fields:
                    assert "default" in field, f"{name}.{field['name']} is new and has no default"


def _samples(schema: dict) -> list[dict]:
    """One record per historical schema, with every field filled with a value of its type."""
    def value(t):
        if isinstance(t, list):
            return value(t[0])
        if isinstance(t, dict):
            kind = t["type"]
            if kind == "record":
                return {f["name"]: value(f["type"]) for f in t["fields"]}
            if kind == "array":
                return [value(t["items"])]
            if kind == "map":
                return {"k": value(t["values"])}
            if kind == "enum":
                return t["symbols"][0]
            return value(kind)
        return {"string": "s", "long": 1, "int": 1, "double": 1.0, "boolean": True, "bytes": b"b", "null": None}[t]
    return [value(schema)]
