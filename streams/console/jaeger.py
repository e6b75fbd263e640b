"""Traces from Jaeger's query API, as the console's waterfall and as time per dependency.

Finding a turn's trace is ``chatstream trace``'s search (spans carry ``messaging.message.id``).
``ui_available`` tells a real Jaeger UI from the placeholder page a Go-module build serves at ``/``,
so nobody is sent to "This is not the Jaeger UI you are looking for".
"""

from __future__ import annotations

import time
from typing import Any

import httpx

PLACEHOLDER_MARK = "not the Jaeger UI you are looking for"
WORKER_SERVICES = ("chatstream-worker",)


def ui_available(base_url: str, timeout_s: float = 3.0) -> bool:
    """True only when ``base_url`` serves Jaeger UI's real page (its React root), not the placeholder."""
    try:
        resp = httpx.get(base_url.rstrip("/") + "/", timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and PLACEHOLDER_MARK not in resp.text and "jaeger-ui-root" in resp.text


def spans_of(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """A Jaeger trace (``/api/traces/{id}`` item) as flat spans: offsets from the trace start, depth-first order."""
    processes = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    rows = []
    for span in trace["spans"]:
        tags = {t["key"]: t.get("value") for t in span.get("tags", [])}
        parent = next((r["spanID"] for r in span.get("references", []) if r.get("refType") == "CHILD_OF"), None)
        error = None
        if tags.get("otel.status_code") == "ERROR" or tags.get("error") is True:
            error = str(tags.get("otel.status_description") or "error")
        events = []
        for log in span.get("logs", []):
            fields = {f["key"]: f.get("value") for f in log.get("fields", [])}
            events.append({"at_us": log.get("timestamp", span["startTime"]), "name": str(fields.pop("event", "event")),
                           "attributes": fields})
        rows.append({
            "span_id": span["spanID"], "parent_id": parent, "name": span["operationName"],
            "service": processes.get(span["processID"], "?"), "start_us": span["startTime"],
            "duration_us": span["duration"], "error": error, "attributes": tags, "events": events,
        })
    if not rows:
        return []
    start = min(r["start_us"] for r in rows)
    ids = {r["span_id"] for r in rows}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for r in rows:
        r["offset_us"] = r["start_us"] - start
        for e in r["events"]:
            e["offset_us"] = e.pop("at_us") - start
        children.setdefault(r["parent_id"] if r["parent_id"] in ids else None, []).append(r)
    ordered: list[dict[str, Any]] = []

    def walk(parent: str | None, depth: int) -> None:
        for r in sorted(children.get(parent, []), key=lambda x: x["start_us"]):
            r["depth"] = depth
            ordered.append(r)
            walk(r["span_id"], depth + 1)

    walk(None, 0)
    return ordered


def dependency_of(span: dict[str, Any]) -> str | None:
    """Which integration a span's time belongs to (Redis, embeddings, Weaviate, an LLM provider, a channel API)."""
    a, name = span["attributes"], span["name"]
    if a.get("db.system") == "redis":
        return "Redis"
    if name.startswith("embeddings "):
        return "Embeddings"
    if name.startswith("weaviate "):
        return "Weaviate"
    if name.startswith("chat ") and a.get("chatstream.llm.provider"):
        return f"LLM {a['chatstream.llm.provider']}"
    if name == "generate fallback":
        return "LLM fallback (extractive)"
    if span["service"].endswith("-deliver") and a.get("chat.channel"):
        return f"Channel API {a['chat.channel']}"
    return None


def dependency_times(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and max time per turn that each dependency adds, over the traces given (outermost spans only)."""
    per_trace: list[dict[str, float]] = []
    for trace in traces:
        spans = spans_of(trace)
        by_id = {s["span_id"]: s for s in spans}
        totals: dict[str, float] = {}
        for s in spans:
            dep = dependency_of(s)
            if dep is None:
                continue
            parent = by_id.get(s["parent_id"] or "")
            if parent is not None and dependency_of(parent) == dep:
                continue  # nested inside a span of the same dependency: counted there
            totals[dep] = totals.get(dep, 0.0) + s["duration_us"] / 1000
        if totals:
            per_trace.append(totals)
    out = []
    for dep in sorted({d for t in per_trace for d in t}):
        values = [t[dep] for t in per_trace if dep in t]
        out.append({"dependency": dep, "turns": len(values), "mean_ms": sum(values) / len(values),
                    "max_ms": max(values), "total_ms": sum(values)})
    out.sort(key=lambda d: d["mean_ms"] * d["turns"], reverse=True)
    return out


class JaegerReader:
    """The console's view of Jaeger; recent-trace samples are cached briefly (a refresh every few seconds)."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        self._cache: tuple[float, list[dict[str, Any]]] | None = None
        self._ui: tuple[float, bool] | None = None

    def ui(self) -> bool:
        if self._ui is None or time.monotonic() - self._ui[0] > 60:
            self._ui = (time.monotonic(), ui_available(self.base))
        return self._ui[1]

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        resp = httpx.get(f"{self.base}/api/traces/{trace_id}", timeout=10)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        data = resp.json().get("data") or []
        return data[0] if data else None

    def find(self, message_id: str) -> list[str]:
        from streams.commands.trace_cmd import find_trace_ids

        return find_trace_ids(self.base, message_id)

    def recent(self, limit: int = 50, lookback: str = "1h") -> list[dict[str, Any]]:
        if self._cache is not None and time.monotonic() - self._cache[0] < 30:
            return self._cache[1]
        traces: list[dict[str, Any]] = []
        for service in WORKER_SERVICES:
            resp = httpx.get(f"{self.base}/api/traces",
                             params={"service": service, "limit": limit, "lookback": lookback}, timeout=10)
            if resp.status_code == 200:
                traces.extend(resp.json().get("data") or [])
        self._cache = (time.monotonic(), traces)
        return traces

