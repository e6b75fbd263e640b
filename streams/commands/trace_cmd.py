"""``chatstream trace MESSAGE_ID``: where did this turn spend its time, and why did it fail?

Finds the turn's trace through Jaeger's query API (spans carry ``messaging.message.id``) and prints
a waterfall: every hop and every Redis, Weaviate, embedding and LLM call, with its offset from the
start of the trace, duration and status.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx

from streams.cli import CommandError
from streams.config import Settings

SERVICES = ("chatstream-cli", "chatstream-worker", "chatstream-gateway", "chatstream-demo", "chatstream-bench")


def register(sub) -> None:
    parser = sub.add_parser("trace", help="print the trace of one turn as a waterfall (from Jaeger)")
    parser.add_argument("message_id")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the trace to arrive")
    parser.set_defaults(handler=run)


@dataclass
class SpanRow:
    span_id: str
    parent_id: str | None
    name: str
    service: str
    start_us: int
    duration_us: int
    error: str | None
    events: list[str]


def find_trace_ids(base_url: str, message_id: str, services: tuple[str, ...] = SERVICES) -> list[str]:
    found: list[str] = []
    tags = json.dumps({"messaging.message.id": message_id})
    for service in services:
        resp = httpx.get(
            f"{base_url}/api/traces",
            params={"service": service, "tags": tags, "limit": 20, "lookback": "2d"},
            timeout=10,
        )
        if resp.status_code != 200:
            continue
        for trace in resp.json().get("data") or []:
            if trace["traceID"] not in found:
                found.append(trace["traceID"])
    return found


def fetch_trace(base_url: str, trace_id: str) -> list[SpanRow]:
    """The trace's spans as rows, read the way the console reads them (``streams.console.jaeger.spans_of``)."""
    from streams.console.jaeger import spans_of

    resp = httpx.get(f"{base_url}/api/traces/{trace_id}", timeout=10)
    resp.raise_for_status()
    return [
        SpanRow(r["span_id"], r["parent_id"], r["name"], r["service"], r["start_us"], r["duration_us"], r["error"],
                [e["name"] for e in r["events"]])
        for r in spans_of(resp.json()["data"][0])
    ]


def waterfall(rows: list[SpanRow]) -> list[str]:
    """Rows ordered depth-first by start time, indented by depth."""
    by_parent: dict[str | None, list[SpanRow]] = {}
    ids = {r.span_id for r in rows}
    for r in rows:
        by_parent.setdefault(r.parent_id if r.parent_id in ids else None, []).append(r)
    start = min(r.start_us for r in rows)
    lines = [f"{'span':58s} {'service':20s} {'start':>9s} {'duration':>10s}  status"]

    def walk(parent: str | None, depth: int) -> None:
        for r in sorted(by_parent.get(parent, []), key=lambda x: x.start_us):
            name = ("  " * depth + r.name)[:58]
            status = f"ERROR {r.error}" if r.error else "ok"
            extra = f"  [{', '.join(r.events)}]" if r.events else ""
            lines.append(
                f"{name:58s} {r.service[:20]:20s} {(r.start_us - start) / 1000:7.1f}ms {r.duration_us / 1000:8.1f}ms  {status}{extra}"
            )
            walk(r.span_id, depth + 1)

    walk(None, 0)
    return lines


def run(args, settings: Settings) -> int:
    base = settings.jaeger_query_url.rstrip("/")
    deadline = time.monotonic() + args.wait
    try:
        while True:
            ids = find_trace_ids(base, args.message_id)
            if ids or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach Jaeger's query API at {base}: {exc}. Is the stack up (`chatstream stack status`)?")
    if not ids:
        raise CommandError(f"no trace found for message_id {args.message_id} in Jaeger at {base}")
    from streams.console.jaeger import ui_available

    ui = ui_available(base)
    for trace_id in ids:
        rows = fetch_trace(base, trace_id)
        print(f"trace {trace_id}: {len(rows)} spans")
        print("\n".join(waterfall(rows)))
        if ui:
            print(f"Jaeger UI: {base}/trace/{trace_id}")
    if not ui:
        print(f"(no Jaeger UI at {base}: a Go-module build serves a placeholder page; `chatstream console` shows waterfalls)")
    return 0
