"""What a replay has published, on disk, so that Ctrl-C and a second run continue where it stopped.

``$CHATSTREAM_HOME/replays/<name>/manifest.json`` holds what was asked (source, filters, overrides,
message ids in order); ``published.log`` gets one message id per line, appended and flushed after
Kafka acknowledged the record. A resumed run publishes only what the log does not list; turns
published before the interruption are still on the namespace's inbound topic and the worker, which
commits its offsets, picks them up where it left off.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.records import ChatRequest, from_avro, to_avro


def replay_dir(home: Path, name: str) -> Path:
    return Path(home) / "replays" / name


@dataclass
class Manifest:
    name: str
    topic_prefix: str
    source: str
    selection: dict[str, Any]
    overrides: dict[str, Any]
    requests: list[ChatRequest] = field(default_factory=list)
    created_at: int = 0

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        data = {k: v for k, v in self.__dict__.items() if k != "requests"}
        data["requests"] = [to_avro(r) for r in self.requests]
        tmp = folder / "manifest.json.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, folder / "manifest.json")

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        data["requests"] = [from_avro(ChatRequest, r) for r in data.get("requests", [])]
        return cls(**data)


class PublishedLog:
    """Append-only set of published message ids."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "published.log"
        self.ids: set[str] = set()
        if self.path.exists():
            self.ids = {line.strip() for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()}
        self._fh = open(self.path, "a", encoding="utf-8")

    def add(self, message_id: str) -> None:
        self._fh.write(message_id + "\n")
        self._fh.flush()
        self.ids.add(message_id)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self.ids

    def close(self) -> None:
        self._fh.close()
