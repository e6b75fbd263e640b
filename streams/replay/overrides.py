"""Configuration overrides for a replay, from a TOML file (``chatstream replay --config overrides.toml``).

Keys are settings field names, flat or in friendly sections::

    [llm]         model, base_url, api_key, timeout_s, max_retries
    [prompt]      system_prompt, token_budget, max_answer_tokens
    [retrieval]   alpha, top_k, min_relevance
    [history]     policy ("summary" | "full"), turns, summary_max_chars
    [validation]  min_groundedness, max_answer_chars, escalate_after_failures

They are validated against ``Settings`` (a typo is an error, not a silently ignored key) and reach
the replay's worker process as ``CHATSTREAM_*`` environment variables, the one way a worker is
configured. Keys that would leave the replay's namespace (topics, group, Kafka, Redis) are refused.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from streams.config import Settings

SECTIONS: dict[str, dict[str, str]] = {
    "llm": {"model": "llm_model", "base_url": "llm_base_url", "api_key": "llm_api_key", "timeout_s": "llm_timeout_s",
            "max_retries": "llm_max_retries"},
    "prompt": {"system_prompt": "system_prompt", "token_budget": "prompt_token_budget",
               "max_answer_tokens": "max_answer_tokens"},
    "retrieval": {"alpha": "retrieval_alpha", "top_k": "retrieval_top_k", "min_relevance": "answerability_min_relevance"},
    "history": {"policy": "history_policy", "turns": "history_turns", "summary_max_chars": "summary_max_chars",
                "full_max_turns": "full_history_max_turns"},
    "validation": {"min_groundedness": "min_groundedness", "max_answer_chars": "max_answer_chars",
                   "escalate_after_failures": "escalate_after_failures"},
}
FORBIDDEN = {"topic_prefix", "consumer_group", "kafka_bootstrap", "redis_url", "home"}


class OverrideError(ValueError):
    """The overrides file names an unknown or forbidden setting, or a value of the wrong type."""


def flatten(data: dict[str, Any]) -> dict[str, Any]:
    """Section keys mapped to settings field names; flat keys kept as they are."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in SECTIONS:
            for sub, sub_value in value.items():
                field = SECTIONS[key].get(sub, sub if sub in Settings.model_fields else None)
                if field is None:
                    raise OverrideError(f"[{key}] {sub}: unknown key (known: {', '.join(sorted(SECTIONS[key]))})")
                out[field] = sub_value
        else:
            out[key] = value
    return out


def validate(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides checked against Settings; returns them with their validated values."""
    unknown = sorted(k for k in overrides if k not in Settings.model_fields)
    if unknown:
        raise OverrideError(f"unknown settings: {', '.join(unknown)}")
    forbidden = sorted(k for k in overrides if k in FORBIDDEN)
    if forbidden:
        raise OverrideError(f"a replay cannot override {', '.join(forbidden)}: it runs in its own namespace")
    try:
        checked = Settings(**overrides)
    except ValidationError as exc:
        raise OverrideError(str(exc)) from exc
    return {k: getattr(checked, k) for k in overrides}


def load(path: str | Path) -> dict[str, Any]:
    """Overrides from a TOML file, validated."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise OverrideError(f"{path}: {exc}") from exc
    return validate(flatten(data))


def to_env(overrides: dict[str, Any]) -> dict[str, str]:
    """``CHATSTREAM_*`` variables that make a child process build Settings with these values."""
    env = {}
    for name, value in overrides.items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, (list, dict)):
            env[f"CHATSTREAM_{name.upper()}"] = json.dumps(value)
        elif isinstance(value, bool):
            env[f"CHATSTREAM_{name.upper()}"] = "true" if value else "false"
        else:
            env[f"CHATSTREAM_{name.upper()}"] = "" if value is None else str(value)
    return env


def printable(overrides: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy with secrets masked (for the manifest and the terminal)."""
    out = {}
    for name, value in overrides.items():
        if isinstance(value, SecretStr):
            out[name] = "********"
        elif isinstance(value, Path):
            out[name] = str(value)
        else:
            out[name] = value
    return out
