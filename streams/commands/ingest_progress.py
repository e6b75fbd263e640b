"""What ``chatstream ingest`` shows while it works: a progress bar on a terminal, plain lines otherwise.

A 10,000-chunk corpus takes minutes; silence for that long reads as a hang. On a terminal a rich bar
shows documents, chunks, chunks/s and the ETA; piped into a log or CI there is no cursor to move, so
the same figures are printed as one line every ``every_s`` seconds (and once at the start and end).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from processors.ingest import IngestProgress


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(p: IngestProgress) -> str:
    share = 100.0 * p.embedded / p.to_embed if p.to_embed else 100.0
    return (
        f"ingest {p.tenant}: {p.embedded}/{p.to_embed} chunks embedded ({share:.0f}%), "
        f"{p.rate:.1f} chunks/s, ETA {format_duration(p.eta_s if p.embedded < p.to_embed else 0)}; "
        f"{p.documents} documents, {p.chunks} chunks, {p.chunks - p.to_embed} already stored"
    )


class PlainProgress:
    """One line per ``every_s`` seconds: for logs, pipes and CI."""

    def __init__(self, stream: TextIO, every_s: float = 5.0) -> None:
        self.stream = stream
        self.every_s = every_s
        self._last = float("-inf")
        self.last: IngestProgress | None = None

    def __call__(self, p: IngestProgress) -> None:
        self.last = p
        now = time.monotonic()
        if now - self._last >= self.every_s or p.embedded >= p.to_embed:
            self._last = now
            print(progress_line(p), file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A live bar (rich) on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("chunks  {task.fields[rate]:.1f}/s  ETA {task.fields[eta]}  {task.fields[docs]} docs"),
            TimeElapsedColumn(),
            console=Console(file=stream),
            transient=False,
        )
        self._task = None
        self.last: IngestProgress | None = None

    def __call__(self, p: IngestProgress) -> None:
        self.last = p
        fields = dict(rate=p.rate, eta=format_duration(p.eta_s if p.embedded < p.to_embed else 0), docs=p.documents)
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(f"ingest {p.tenant}", total=p.to_embed or 1, **fields)
        self._progress.update(self._task, completed=p.embedded if p.to_embed else 1, **fields)

    def close(self) -> None:
        if self._task is not None:
            self._progress.stop()


def progress_for(stream: TextIO | None = None, *, every_s: float = 5.0) -> PlainProgress | RichProgress:
    """A bar when ``stream`` is a terminal, plain periodic lines otherwise."""
    stream = stream or sys.stdout
    return RichProgress(stream) if stream.isatty() else PlainProgress(stream, every_s)
