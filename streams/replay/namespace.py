"""Replay namespaces: topic prefix ``replay-<name>.``, and the guard that keeps them off real channels.

A replay runs the normal worker with ``topic_prefix=replay-<name>.``: its topics, its consumer group
and (through ``processors.session.redis_key_prefix``) its Redis keys for sessions, rate-limit buckets
and reply markers are all its own. It has no ``deliver`` process, and ``refuse_replay_namespace`` makes
sure none can be started by mistake: a replay must never post to Slack.
"""

from __future__ import annotations

import re

REPLAY_PREFIX = "replay-"
PRODUCTION = "production"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class ReplayNamespaceError(RuntimeError):
    """Something that must never run inside a replay namespace was started there."""


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"replay name {name!r} must be 1-63 letters, digits, '-' or '_' (starting with a letter or digit)")
    return name


def replay_prefix(name: str) -> str:
    """Topic prefix of the replay called ``name``."""
    return f"{REPLAY_PREFIX}{check_name(name)}."


def is_replay_namespace(topic_prefix: str) -> bool:
    return topic_prefix.startswith(REPLAY_PREFIX)


def run_prefix(run: str) -> str:
    """Topic prefix of a run named on the command line: ``production``, a replay name, or a raw prefix."""
    if run in (PRODUCTION, "", "prod"):
        return ""
    if run.endswith("."):
        return run
    return replay_prefix(run)


def refuse_replay_namespace(topic_prefix: str, what: str) -> None:
    """Raise when ``what`` (deliver, a sink) is about to run on a replay namespace."""
    if is_replay_namespace(topic_prefix):
        raise ReplayNamespaceError(
            f"{what} refuses to run on the replay namespace {topic_prefix!r}: replays never reach channels "
            "or ticketing systems (unset CHATSTREAM_TOPIC_PREFIX for production)"
        )
