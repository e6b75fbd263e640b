"""The plain value of an optional secret, without knowing where the settings come from.

Builders in ``processors`` receive a settings object from ``streams`` (duck-typed) and must not
import ``streams`` themselves: imports point down.
"""

from __future__ import annotations

from typing import Any


def plain_secret(value: Any) -> str | None:
    """``SecretStr`` or ``str`` or ``None`` -> the plain string, ``None`` when unset or empty."""
    if value is None:
        return None
    plain = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return plain or None
