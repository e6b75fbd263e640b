"""Waterfall rows and time per dependency from Jaeger's trace JSON (no Jaeger needed)."""

from __future__ import annotations

from streams.console.jaeger import dependency_times, spans_of


def _span(sid, parent, name, start, dur, tags=None, pid="p1", logs=()):
    return {"spanID": sid, "operationName": name, "processID": pid, "startTime": start, "duration": dur,
            "references": [{"refType": "CHILD_OF", "spanID": parent}] if parent else [],
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()], "logs": list(logs)}


TRACE = {
    "processes": {"p1": {"serviceName": "chatstream-worker"}, "p2": {"serviceName": "chatstream-cli"}},
    "spans": [
        _span("d", "a", "chat.enriched process", 1_100, 900, pid="p1"),
        _span("a", None, "chat.inbound publish", 1_000, 50, pid="p2"),
        _span("e", "d", "embeddings embed", 1_200, 30),
        _span("f", "d", "weaviate hybrid_search", 1_250, 200, {"otel.status_code": "ERROR",
                                                                 "otel.status_description": "timeout"},
              logs=[{"timestamp": 1_300, "fields": [{"key": "event", "value": "retry"}]}]),
        _span("b", "a", "chat.inbound process", 1_060, 30),
        _span("c", "b", "redis get_session", 1_065, 10, {"db.system": "redis"}),
        _span("g", "d", "chat scripted-llm", 1_500, 400, {"chatstream.llm.provider": "openai"}),
    ],
}


def test_spans_depth_first_with_offsets_errors_and_events() -> None:
    spans = spans_of(TRACE)
    assert [s["name"] for s in spans] == ["chat.inbound publish", "chat.inbound process", "redis get_session",
                                          "chat.enriched process", "embeddings embed", "weaviate hybrid_search",
                                          "chat scripted-llm"]
    weaviate = spans[5]
    assert weaviate["depth"] == 2 and weaviate["offset_us"] == 250 and weaviate["error"] == "timeout"
    assert weaviate["events"] == [{"name": "retry", "attributes": {}, "offset_us": 300}]
    assert spans[0]["service"] == "chatstream-cli"


def test_dependency_times_per_turn() -> None:
    deps = {d["dependency"]: d for d in dependency_times([TRACE, TRACE])}
    assert set(deps) == {"Redis", "Embeddings", "Weaviate", "LLM openai"}
    assert deps["LLM openai"]["mean_ms"] == 0.4 and deps["LLM openai"]["turns"] == 2
    assert dependency_times([TRACE])[0]["dependency"] == "LLM openai"  # most time per turn first


def _serve(body: str):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            data = body.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_placeholder_page_is_not_a_jaeger_ui() -> None:
    from streams.console.jaeger import ui_available

    placeholder = _serve("<h1>\U0001f94b: This is not the Jaeger UI you are looking for!</h1>")
    real = _serve('<!doctype html><html><body><div id="jaeger-ui-root"></div></body></html>')
    try:
        assert not ui_available(f"http://127.0.0.1:{placeholder.server_port}")
        assert ui_available(f"http://127.0.0.1:{real.server_port}")
        assert not ui_available("http://127.0.0.1:9")  # nothing listens
    finally:
        placeholder.shutdown()
        real.shutdown()
