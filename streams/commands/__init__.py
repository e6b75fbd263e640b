"""The ``chatstream`` command groups of the streams package."""

from __future__ import annotations


class CommandError(Exception):
    """An error the operator can fix; ``chatstream`` prints it without a traceback.

    Here, not in ``streams.cli``, so that command modules of lower packages (``stack.commands``)
    raise it without importing the CLI.
    """
