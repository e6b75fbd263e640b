"""What the console knows about recent turns: one SQLite file in the state folder, aggregated in SQL.

The tail writes one row per turn (the question from ``chat.inbound``, the outcome from
``chat.outbound``), plus feedback, escalations and dead letters; the web app asks for series and
top-N lists, never for raw rows in bulk, so a page stays small with 10,000 or 100,000 turns. Memory
is bounded by SQLite's page cache and disk by ``max_turns`` (oldest turns pruned first).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable

STAGE_COLUMNS = ("enrich", "retrieve", "generate", "llm", "validate")
PROBLEM_STATUSES = ("FALLBACK", "ESCALATED", "BLOCKED")

SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    message_id TEXT PRIMARY KEY,
    session_id TEXT, trace_id TEXT, channel TEXT, tenant TEXT,
    question TEXT, question_key TEXT, intent TEXT, sent_at INTEGER,
    status TEXT, reason TEXT, created_at INTEGER, latency_ms INTEGER,
    enrich_ms INTEGER, retrieve_ms INTEGER, generate_ms INTEGER, llm_ms INTEGER, validate_ms INTEGER,
    model TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, groundedness REAL,
    seen_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_seen ON turns(seen_at);
CREATE INDEX IF NOT EXISTS turns_created ON turns(created_at);
CREATE INDEX IF NOT EXISTS turns_session ON turns(session_id);
CREATE INDEX IF NOT EXISTS turns_trace ON turns(trace_id);
CREATE TABLE IF NOT EXISTS citations (message_id TEXT, doc_id TEXT, title TEXT, score REAL, created_at INTEGER,
    PRIMARY KEY (message_id, doc_id));
CREATE INDEX IF NOT EXISTS citations_created ON citations(created_at);
CREATE TABLE IF NOT EXISTS feedback (message_id TEXT, kind TEXT, score INTEGER, created_at INTEGER,
    PRIMARY KEY (message_id, kind, created_at));
CREATE INDEX IF NOT EXISTS feedback_created ON feedback(created_at);
CREATE TABLE IF NOT EXISTS escalations (message_id TEXT PRIMARY KEY, reason TEXT, created_at INTEGER);
CREATE TABLE IF NOT EXISTS deadletters (ref TEXT PRIMARY KEY, stage TEXT, error_class TEXT, message_id TEXT,
    created_at INTEGER);
CREATE INDEX IF NOT EXISTS deadletters_created ON deadletters(created_at);
"""

_WORD = re.compile(r"[a-z']+")


def question_key(text: str) -> str:
    """Cluster key for "which questions fail": lower case, words only, numbers and punctuation dropped."""
    return " ".join(_WORD.findall(text.lower()))[:160]


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return float(sorted_values[index])


class TurnStore:
    """Thread-safe: the tail writes from its thread, the web app reads from worker threads."""

    def __init__(self, path: Path | str, max_turns: int = 100_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_turns = max_turns
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writes (the tail) ----------------------------------------------------------------------
    def write(self, batch: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Apply (kind, row) pairs in one transaction; kind is request, reply, feedback, escalation, deadletter."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN")
            try:
                for kind, row in batch:
                    getattr(self, f"_write_{kind}")(cur, row)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self._prune(cur)

    @staticmethod
    def _write_request(cur: sqlite3.Cursor, r: dict[str, Any]) -> None:
        cur.execute(
            """INSERT INTO turns (message_id, session_id, trace_id, channel, tenant, question, question_key, intent,
                                  sent_at, seen_at)
               VALUES (:message_id, :session_id, :trace_id, :channel, :tenant, :question, :question_key, :intent,
                       :sent_at, :seen_at)
               ON CONFLICT(message_id) DO UPDATE SET question=excluded.question, question_key=excluded.question_key,
                   intent=excluded.intent, sent_at=excluded.sent_at, trace_id=coalesce(turns.trace_id, excluded.trace_id)""",
            {**r, "question_key": question_key(r.get("question") or ""), "seen_at": r.get("seen_at") or r["sent_at"]},
        )

    @staticmethod
    def _write_reply(cur: sqlite3.Cursor, r: dict[str, Any]) -> None:
        stage_ms = r.get("stage_ms") or {}
        row = {**r, **{f"{s}_ms": stage_ms.get(s) for s in STAGE_COLUMNS}, "seen_at": r["created_at"]}
        cur.execute(
            """INSERT INTO turns (message_id, session_id, trace_id, channel, tenant, status, reason, created_at,
                   latency_ms, enrich_ms, retrieve_ms, generate_ms, llm_ms, validate_ms, model, prompt_tokens,
                   completion_tokens, groundedness, seen_at)
               VALUES (:message_id, :session_id, :trace_id, :channel, :tenant, :status, :reason, :created_at,
                   :latency_ms, :enrich_ms, :retrieve_ms, :generate_ms, :llm_ms, :validate_ms, :model, :prompt_tokens,
                   :completion_tokens, :groundedness, :seen_at)
               ON CONFLICT(message_id) DO UPDATE SET status=excluded.status, reason=excluded.reason,
                   created_at=excluded.created_at, latency_ms=excluded.latency_ms, enrich_ms=excluded.enrich_ms,
                   retrieve_ms=excluded.retrieve_ms, generate_ms=excluded.generate_ms, llm_ms=excluded.llm_ms,
                   validate_ms=excluded.validate_ms, model=excluded.model, prompt_tokens=excluded.prompt_tokens,
                   completion_tokens=excluded.completion_tokens, groundedness=excluded.groundedness,
                   trace_id=coalesce(turns.trace_id, excluded.trace_id)""",
            row,
        )
        for c in r.get("citations") or []:
            cur.execute(
                "INSERT OR REPLACE INTO citations VALUES (?, ?, ?, ?, ?)",
                (r["message_id"], c["doc_id"], c.get("title", ""), c.get("score", 0.0), r["created_at"]),
            )

    @staticmethod
    def _write_feedback(cur: sqlite3.Cursor, r: dict[str, Any]) -> None:
        cur.execute("INSERT OR IGNORE INTO feedback VALUES (:message_id, :kind, :score, :created_at)", r)

    @staticmethod
    def _write_escalation(cur: sqlite3.Cursor, r: dict[str, Any]) -> None:
        cur.execute("INSERT OR REPLACE INTO escalations VALUES (:message_id, :reason, :created_at)", r)

    @staticmethod
    def _write_deadletter(cur: sqlite3.Cursor, r: dict[str, Any]) -> None:
        cur.execute("INSERT OR REPLACE INTO deadletters VALUES (:ref, :stage, :error_class, :message_id, :created_at)", r)

    def _prune(self, cur: sqlite3.Cursor) -> None:
        (count,) = cur.execute("SELECT count(*) FROM turns").fetchone()
        if count <= self.max_turns * 1.1:
            return
        (cut,) = cur.execute(
            "SELECT seen_at FROM turns ORDER BY seen_at DESC LIMIT 1 OFFSET ?", (self.max_turns,)
        ).fetchone()
        for table, column in (("turns", "seen_at"), ("citations", "created_at"), ("feedback", "created_at"),
                              ("escalations", "created_at"), ("deadletters", "created_at")):
            cur.execute(f"DELETE FROM {table} WHERE {column} <= ?", (cut,))

    # --- reads (the web app) --------------------------------------------------------------------
    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._db.cursor()
            cur.row_factory = sqlite3.Row
            return cur.execute(sql, tuple(params)).fetchall()

    def _tuples(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """Plain tuples: several times faster than ``sqlite3.Row`` where a loop touches every row."""
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def count(self) -> int:
        return self._rows("SELECT count(*) AS n FROM turns")[0]["n"]

    def recent(self, limit: int = 50, query: str | None = None) -> list[dict[str, Any]]:
        """Newest turns first; ``query`` matches a message id, session id or trace id exactly (or a prefix)."""
        cols = ("message_id, session_id, trace_id, channel, status, reason, seen_at, latency_ms, question, model, "
                "groundedness")
        if query:
            q = query.strip()
            rows = self._rows(
                f"""SELECT {cols} FROM turns WHERE message_id = ?1 OR session_id = ?1 OR trace_id = ?1
                    OR message_id LIKE ?2 OR session_id LIKE ?2 ORDER BY seen_at DESC LIMIT ?3""",
                (q, q.replace("%", "") + "%", limit),
            )
        else:
            rows = self._rows(f"SELECT {cols} FROM turns ORDER BY seen_at DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    def turn(self, message_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM turns WHERE message_id = ?", (message_id,))
        return dict(rows[0]) if rows else None

    def turn_series(self, since_ms: int, bucket_ms: int, input_cost: float, output_cost: float) -> dict[str, Any]:
        """Per bucket: turns by status, latency percentiles (e2e, per stage, overhead), tokens and cost."""
        rows = self._tuples(
            f"""SELECT created_at / ?1 AS b, status, latency_ms, {', '.join(f'{s}_ms' for s in STAGE_COLUMNS)},
                       coalesce(prompt_tokens, 0) AS pt, coalesce(completion_tokens, 0) AS ct
                FROM turns WHERE created_at >= ?2 AND status IS NOT NULL ORDER BY b""",
            (bucket_ms, since_ms),
        )
        first, last = since_ms // bucket_ms, max(since_ms // bucket_ms, _now_ms() // bucket_ms)
        buckets = list(range(first, last + 1))
        index = {b: i for i, b in enumerate(buckets)}
        n = len(buckets)
        statuses: dict[str, list[float | None]] = {}
        latency: dict[str, list[list[float]]] = {k: [[] for _ in range(n)] for k in ("e2e", "overhead", *STAGE_COLUMNS)}
        tokens_in, tokens_out = [0.0] * n, [0.0] * n
        stage_lists = [latency[s] for s in STAGE_COLUMNS]
        e2e, overhead = latency["e2e"], latency["overhead"]
        llm_at = 3 + STAGE_COLUMNS.index("llm")
        for r in rows:  # tuples: (bucket, status, latency, *stage ms, prompt tokens, completion tokens)
            i = index.get(r[0])
            if i is None:
                continue
            per_status = statuses.get(r[1])
            if per_status is None:
                per_status = statuses[r[1]] = [0.0] * n
            per_status[i] += 1  # type: ignore[operator]
            if r[2] is not None:
                e2e[i].append(r[2])
                overhead[i].append(max(0, r[2] - (r[llm_at] or 0)))
            for k, lists in enumerate(stage_lists):
                v = r[3 + k]
                if v is not None:
                    lists[i].append(v)
            tokens_in[i] += r[-2]
            tokens_out[i] += r[-1]
        per_min = 60_000 / bucket_ms
        pct: dict[str, dict[str, list[float | None]]] = {}
        for name, per_bucket in latency.items():
            pct[name] = {"p50": [], "p95": [], "p99": []}
            for values in per_bucket:
                values.sort()
                for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
                    pct[name][label].append(percentile(values, q))
        totals = [sum(statuses[s][i] or 0 for s in statuses) for i in range(n)]
        escalated = statuses.get("ESCALATED", [0.0] * n)
        return {
            "x": [b * bucket_ms // 1000 for b in buckets],
            "bucket_s": bucket_ms / 1000,
            "status": statuses,
            "turns_per_s": [t / (bucket_ms / 1000) for t in totals],
            "escalation_rate": [((escalated[i] or 0) / totals[i] * 100) if totals[i] else None for i in range(n)],
            "latency": pct,
            "tokens_per_min": {"input": [v * per_min for v in tokens_in], "output": [v * per_min for v in tokens_out]},
            "cost_per_min": [(tokens_in[i] * input_cost + tokens_out[i] * output_cost) / 1e6 * per_min for i in range(n)],
        }

    def totals(self, since_ms: int, input_cost: float, output_cost: float) -> dict[str, Any]:
        row = self._rows(
            """SELECT count(*) AS turns, sum(status = 'ESCALATED') AS escalated, sum(status = 'FALLBACK') AS fallback,
                      sum(coalesce(prompt_tokens, 0)) AS pt, sum(coalesce(completion_tokens, 0)) AS ct,
                      avg(groundedness) AS groundedness
               FROM turns WHERE created_at >= ? AND status IS NOT NULL""",
            (since_ms,),
        )[0]
        fb = self._rows(
            """SELECT sum(kind = 'THUMBS_UP') AS up, sum(kind = 'THUMBS_DOWN') AS down,
                      avg(CASE WHEN kind = 'CSAT' THEN score END) AS csat, sum(kind = 'CSAT') AS csat_n
               FROM feedback WHERE created_at >= ?""",
            (since_ms,),
        )[0]
        turns = row["turns"] or 0
        return {
            "turns": turns,
            "escalation_rate": (row["escalated"] or 0) / turns * 100 if turns else None,
            "fallback_rate": (row["fallback"] or 0) / turns * 100 if turns else None,
            "tokens": (row["pt"] or 0) + (row["ct"] or 0),
            "cost": ((row["pt"] or 0) * input_cost + (row["ct"] or 0) * output_cost) / 1e6,
            "groundedness": row["groundedness"],
            "thumbs_up": fb["up"] or 0,
            "thumbs_down": fb["down"] or 0,
            "csat": fb["csat"],
            "csat_n": fb["csat_n"] or 0,
        }

    def counted_series(self, table: str, label: str, since_ms: int, bucket_ms: int) -> dict[str, Any]:
        """Counts per bucket and label for feedback (kind) and dead letters (stage)."""
        assert (table, label) in (("feedback", "kind"), ("deadletters", "stage"))
        rows = self._rows(
            f"SELECT created_at / ? AS b, {label} AS l, count(*) AS n FROM {table} WHERE created_at >= ? GROUP BY b, l",
            (bucket_ms, since_ms),
        )
        first, last = since_ms // bucket_ms, max(since_ms // bucket_ms, _now_ms() // bucket_ms)
        n = last - first + 1
        series: dict[str, list[float]] = {}
        for r in rows:
            i = r["b"] - first
            if 0 <= i < n:
                series.setdefault(r["l"] or "?", [0.0] * n)[i] += r["n"]
        return {"x": [(first + i) * bucket_ms // 1000 for i in range(n)], "series": series}

    # --- the article's three questions ------------------------------------------------------------
    def failing_questions(self, since_ms: int, limit: int = 10) -> list[dict[str, Any]]:
        """Question clusters (intent when the channel gave one, else normalised text) ending badly most often."""
        placeholders = ", ".join("?" for _ in PROBLEM_STATUSES)
        rows = self._rows(
            f"""SELECT coalesce(nullif(intent, ''), question_key) AS cluster, min(question) AS example,
                       count(*) AS turns, sum(status IN ({placeholders})) AS problems,
                       sum(status = 'FALLBACK') AS fallback, sum(status = 'ESCALATED') AS escalated,
                       sum(status = 'BLOCKED') AS blocked
                FROM turns WHERE created_at >= ? AND status IS NOT NULL AND question_key IS NOT NULL
                GROUP BY cluster HAVING problems > 0 ORDER BY problems DESC, turns DESC LIMIT ?""",
            (*PROBLEM_STATUSES, since_ms, limit),
        )
        return [dict(r) | {"problem_rate": r["problems"] / r["turns"] * 100} for r in rows]

    def stage_time_per_turn(self, since_ms: int) -> dict[str, dict[str, float | None]]:
        """Mean and p95 of each stage's time per turn, from the stage_ms the records carry."""
        rows = self._tuples(
            f"SELECT {', '.join(f'{s}_ms' for s in STAGE_COLUMNS)} FROM turns WHERE created_at >= ? AND status IS NOT NULL",
            (since_ms,),
        )
        out = {}
        for k, s in enumerate(STAGE_COLUMNS):
            values = sorted(r[k] for r in rows if r[k] is not None)
            out[s] = {"mean": sum(values) / len(values) if values else None, "p95": percentile(values, 0.95),
                      "turns": len(values)}
        return out

    def weak_documents(self, since_ms: int, limit: int = 10) -> list[dict[str, Any]]:
        """Documents cited often whose answers are poorly grounded or get thumbs down."""
        rows = self._rows(
            """SELECT c.doc_id, max(c.title) AS title, count(DISTINCT c.message_id) AS citations, avg(t.groundedness) AS groundedness,
                      sum(f.kind = 'THUMBS_DOWN') AS thumbs_down, sum(f.kind = 'THUMBS_UP') AS thumbs_up,
                      avg(CASE WHEN f.kind = 'CSAT' THEN f.score END) AS csat
               FROM citations c JOIN turns t ON t.message_id = c.message_id
               LEFT JOIN feedback f ON f.message_id = c.message_id
               WHERE c.created_at >= ? GROUP BY c.doc_id""",
            (since_ms,),
        )
        docs = []
        for r in rows:
            d = dict(r)
            d["thumbs_down"], d["thumbs_up"] = d["thumbs_down"] or 0, d["thumbs_up"] or 0
            rated = d["thumbs_down"] + d["thumbs_up"]
            d["negative_rate"] = d["thumbs_down"] / rated * 100 if rated else None
            # weakness: low groundedness and negative feedback, weighted by how often the document is used
            d["weakness"] = d["citations"] * ((1 - (d["groundedness"] or 0)) + (d["negative_rate"] or 0) / 100)
            docs.append(d)
        docs.sort(key=lambda d: d["weakness"], reverse=True)
        return docs[:limit]


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def reply_row(resp: Any, trace_id: str | None) -> dict[str, Any]:
    """A ChatResponse as the store's reply row."""
    return {
        "message_id": resp.message_id, "session_id": resp.session_id, "trace_id": trace_id, "channel": resp.channel,
        "tenant": resp.tenant, "status": resp.status.value, "reason": resp.reason, "created_at": resp.created_at,
        "latency_ms": resp.latency_ms, "stage_ms": dict(resp.stage_ms), "model": resp.model,
        "prompt_tokens": resp.prompt_tokens, "completion_tokens": resp.completion_tokens,
        "groundedness": resp.groundedness,
        "citations": [{"doc_id": c.doc_id, "title": c.title, "score": c.score} for c in resp.citations],
    }


def request_row(req: Any, trace_id: str | None, seen_at: int) -> dict[str, Any]:
    return {
        "message_id": req.message_id, "session_id": req.session_id, "trace_id": trace_id, "channel": req.channel,
        "tenant": req.tenant, "question": req.text[:500], "intent": (req.metadata or {}).get("intent", ""),
        "sent_at": req.sent_at, "seen_at": seen_at,
    }

