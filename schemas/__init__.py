"""The Avro contract of chatstream, shipped as plain ``.avsc`` files.

Consumers in any language need only these files: current writer schemas live here, every released version
under ``history/<Record>/vN.avsc`` so that old records stay readable (BACKWARD_TRANSITIVE).
"""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent

CURRENT_FILES = {
    "ChatRequest": "chat_request.avsc",
    "ChatTurn": "chat_turn.avsc",
    "ChatResponse": "chat_response.avsc",
    "ChatEscalation": "chat_escalation.avsc",
    "DeadLetter": "dead_letter.avsc",
    "ChatFeedback": "chat_feedback.avsc",
    "ChatDelta": "chat_delta.avsc",
}


def load_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def current(record: str) -> dict:
    """The current (writer and reader) schema of a record, as JSON."""
    return load_json(SCHEMA_DIR / CURRENT_FILES[record])


def history(record: str) -> list[dict]:
    """Every released version of a record kept in the repo, oldest first (the newest equals the current)."""
    folder = SCHEMA_DIR / "history" / record
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
    return [load_json(p) for p in files]
