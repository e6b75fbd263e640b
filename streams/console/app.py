"""The console's web app: one page, a JSON API behind the operator token, static files from the package.

Every ``/api/`` route needs ``Authorization: Bearer <operator token>``; the page itself carries no data
and takes the token from the address's fragment (``/#token=...``, never sent to a server or a log).
Slow reads (Kafka, Jaeger, SQLite aggregation) run in threads so one slow Jaeger answer never stalls
the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from processors.records import ChatRequest, ChatResponse, ChatTurn, to_avro
from streams.codec import DecodeError, make_codec
from streams.config import Settings
from streams.console.jaeger import JaegerReader, dependency_times, spans_of
from streams.console.scrape import MetricsScraper
from streams.console.store import TurnStore
from streams.console.tail import TopicTail

log = logging.getLogger("chatstream.console")
STATIC = Path(__file__).resolve().parent / "static"
RANGES_S = {"5m": 300, "15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600}
TRACE_ID = re.compile(r"^[0-9a-f]{16,32}$")


def operator_token(settings: Settings) -> str:
    """The configured token, else the one generated into the state folder on first start (mode 0600)."""
    if settings.console_token is not None:
        return settings.console_token.get_secret_value()
    path = Path(settings.home) / "console-token"
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


class TokenGuard(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next):  # type: ignore[no-untyped-def]
        if request.url.path.startswith("/api/"):
            given = request.headers.get("authorization", "")
            expected = "Bearer " + request.app.state.token
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return JSONResponse({"error": "operator token required"}, status_code=401)
        return await call_next(request)


def _range(request: Request) -> tuple[int, int]:
    """(since in epoch ms, bucket in ms) for ?range=5m|15m|1h|6h|24h: about 60 buckets per chart."""
    seconds = RANGES_S.get(request.query_params.get("range", "15m"), 900)
    bucket_s = max(5, seconds // 60)
    now = int(time.time())
    since = (now - seconds) // bucket_s * bucket_s
    return since * 1000, bucket_s * 1000


def decode_original(settings: Settings, codec: Any, topic: str, value: bytes | None) -> dict[str, Any]:
    """A dead letter's original bytes for a human: the record when it decodes, else text, else base64."""
    if value is None:
        return {"format": "empty"}
    t = settings.topics
    expected = {t.inbound: ChatRequest, t.enriched: ChatTurn, t.retrieved: ChatTurn, t.generated: ChatTurn,
                t.outbound: ChatResponse}.get(topic)
    reason = f"no record type known for topic {topic}"
    if expected is not None:
        try:
            return {"format": "avro", "record": to_avro(codec.decode(value, expected))}
        except DecodeError as exc:
            reason = str(exc)
    try:
        return {"format": "text", "text": value.decode("utf-8"), "why": reason}
    except UnicodeDecodeError:
        return {"format": "base64", "base64": base64.b64encode(value).decode(), "why": reason}


class Console:
    """What the routes share: settings, store, tail, scraper, Jaeger reader."""

    def __init__(self, settings: Settings, store: TurnStore, *, metrics_url: str | None = None,
                 follow: bool = True) -> None:
        self.settings = settings
        self.store = store
        self.codec = make_codec(settings)
        self.jaeger = JaegerReader(settings.jaeger_query_url)
        self.tail = TopicTail(settings, store, backfill=settings.console_backfill) if follow else None
        self.scraper = MetricsScraper(settings, url=metrics_url) if follow else None

    def start(self) -> None:
        if self.tail:
            self.tail.start()
        if self.scraper:
            self.scraper.start()

    def stop(self) -> None:
        for part in (self.tail, self.scraper):
            if part is not None:
                part.stop()

    # --- routes ---------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    async def overview(self, request: Request) -> Response:
        since_ms, bucket_ms = _range(request)
        s = self.settings
        cost = (s.llm_input_cost_per_mtok, s.llm_output_cost_per_mtok)

        def read() -> dict[str, Any]:
            return {
                "now": int(time.time()),
                "since": since_ms // 1000,
                "totals": self.store.totals(since_ms, *cost),
                "turns": self.store.turn_series(since_ms, bucket_ms, *cost),
                "feedback": self.store.counted_series("feedback", "kind", since_ms, bucket_ms),
                "deadletters": self.store.counted_series("deadletters", "stage", since_ms, bucket_ms),
                "worker": self.scraper.series(since_ms / 1000) if self.scraper else {"x": [], "error": "not scraping"},
                "store_turns": self.store.count(),
            }

        return JSONResponse(await asyncio.to_thread(read))

    async def turns(self, request: Request) -> Response:
        limit = min(200, int(request.query_params.get("limit", "50")))
        query = request.query_params.get("q") or None
        return JSONResponse({"turns": await asyncio.to_thread(self.store.recent, limit, query)})

    async def trace(self, request: Request) -> Response:
        """?id= a message id, session id or trace id: the turn's trace as a waterfall."""
        ident = (request.query_params.get("id") or "").strip()
        if not ident:
            return JSONResponse({"error": "give a message id, session id or trace id"}, status_code=400)
        try:
            return JSONResponse(await asyncio.to_thread(self._trace, ident))
        except httpx.HTTPError as exc:
            return JSONResponse({"error": f"Jaeger at {self.jaeger.base}: {exc}"}, status_code=502)

    def _trace(self, ident: str) -> dict[str, Any]:
        turn = self.store.turn(ident)
        if turn is None:
            matches = self.store.recent(1, ident)
            turn = self.store.turn(matches[0]["message_id"]) if matches else None
        trace_ids: list[str] = []
        if turn and turn.get("trace_id"):
            trace_ids.append(turn["trace_id"])
        elif TRACE_ID.match(ident.lower()):
            trace_ids.append(ident.lower())
        else:
            trace_ids.extend(self.jaeger.find(turn["message_id"] if turn else ident))
        for trace_id in trace_ids:
            data = self.jaeger.trace(trace_id)
            if data is not None:
                ui = self.jaeger.ui()
                return {"trace_id": trace_id, "turn": turn, "spans": spans_of(data),
                        "jaeger_url": f"{self.jaeger.base}/trace/{trace_id}" if ui else None}
        return {"trace_id": trace_ids[0] if trace_ids else None, "turn": turn, "spans": [], "jaeger_url": None,
                "error": "no trace in Jaeger (yet): traces arrive a few seconds after the turn, or were sampled out"}

    async def questions(self, request: Request) -> Response:
        since_ms, _ = _range(request)

        def read() -> dict[str, Any]:
            try:
                deps = dependency_times(self.jaeger.recent(limit=100))
                deps_error = None
            except httpx.HTTPError as exc:
                deps, deps_error = [], f"Jaeger at {self.jaeger.base}: {exc}"
            return {
                "failing_questions": self.store.failing_questions(since_ms),
                "stage_time": self.store.stage_time_per_turn(since_ms),
                "dependencies": deps,
                "dependencies_error": deps_error,
                "weak_documents": self.store.weak_documents(since_ms),
            }

        return JSONResponse(await asyncio.to_thread(read))

    async def deadletters(self, request: Request) -> Response:
        from streams.commands.dlq_cmd import read_letters
        from streams.cli import CommandError

        limit = min(500, int(request.query_params.get("limit", "100")))
        try:
            letters = await asyncio.to_thread(read_letters, self.settings)
        except (CommandError, TimeoutError) as exc:
            return JSONResponse({"letters": [], "error": str(exc)})
        out = []
        for l in reversed(letters[-limit:]):
            r = l.record
            out.append({
                "ref": l.ref, "failed_at": r.failed_at, "stage": r.stage, "topic": r.topic, "partition": r.partition,
                "offset": r.offset, "message_id": r.message_id, "replay_count": r.replay_count,
                "error_class": r.error_class, "error_message": r.error_message,
                "headers": {h.key: (h.value or b"").decode("utf-8", "replace") for h in r.headers},
                "original": decode_original(self.settings, self.codec, r.topic, r.value),
            })
        return JSONResponse({"letters": out})

    async def replay(self, request: Request) -> Response:
        """POST {"refs": ["PARTITION:OFFSET", ...]}: ``chatstream dlq replay`` for the chosen letters."""
        from streams.commands.dlq_cmd import read_letters, replay_letters

        body = await request.json()
        refs = body.get("refs") if isinstance(body, dict) else None
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            return JSONResponse({"error": 'body must be {"refs": ["PARTITION:OFFSET", ...]}'}, status_code=400)
        letters = await asyncio.to_thread(read_letters, self.settings)
        chosen = [l for l in letters if l.ref in set(refs)]
        missing = sorted(set(refs) - {l.ref for l in chosen})
        if missing:
            return JSONResponse({"error": f"no dead letter at {', '.join(missing)}"}, status_code=404)
        await replay_letters(self.settings, chosen)
        log.info("replayed dead letters %s", ", ".join(refs))
        return JSONResponse({"replayed": [l.ref for l in chosen],
                             "message_ids": [l.record.message_id for l in chosen]})

    async def status(self, request: Request) -> Response:
        return JSONResponse({
            "store_turns": await asyncio.to_thread(self.store.count),
            "tail_ready": bool(self.tail and self.tail.ready.is_set()),
            "jaeger_ui": await asyncio.to_thread(self.jaeger.ui),
            "jaeger": self.jaeger.base,
            "topic_prefix": self.settings.topic_prefix,
        })


def create_app(settings: Settings, store: TurnStore | None = None, *, token: str | None = None,
               metrics_url: str | None = None, follow: bool = True) -> Starlette:
    store = store or TurnStore(Path(settings.home) / "console.sqlite3", max_turns=settings.console_max_turns)
    console = Console(settings, store, metrics_url=metrics_url, follow=follow)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        console.start()
        try:
            yield
        finally:
            await asyncio.to_thread(console.stop)

    app = Starlette(
        routes=[
            Route("/", console.index),
            Route("/api/status", console.status),
            Route("/api/overview", console.overview),
            Route("/api/turns", console.turns),
            Route("/api/trace", console.trace),
            Route("/api/questions", console.questions),
            Route("/api/deadletters", console.deadletters),
            Route("/api/deadletters/replay", console.replay, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(TokenGuard)],
        lifespan=lifespan,
    )
    app.state.token = token or operator_token(settings)
    app.state.console = console
    return app
