"""What every part of the stack shares: the operator-facing error and reading a log's last lines.

Its own module so that ``stack.service`` and ``stack.build`` both use it without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path


class StackError(Exception):
    """Something the operator must fix; the message says what and how."""


def tail_file(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a (possibly large) log without reading all of it."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log yet at {path})"
    return "\n".join(data.splitlines()[-lines:])
