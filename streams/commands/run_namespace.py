"""A throw-away run's namespace (a bench's ``bench-<id>.``, a soak's ``soak-<id>.``) deleted when it ends.

Why: leftover topics fill the broker's heap (1,654 bench topics once made a 512 MiB broker collect
every 6.5 s, stalling every turn), and each turn's reply marker and claim counter would stay in Redis
for a week. A failure here only warns: the run's figures are printed already.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from streams.config import Settings


def delete_run_namespace(settings: Settings, say: Callable[[str], object]) -> None:
    """Delete the run's topics (its consumer group goes with their offsets), then its Redis keys."""
    from streams.stages.clients import delete_namespace_keys_now
    from streams.topics import delete_topics

    try:
        deleted = delete_topics(settings)
        say(f"deleted the run's {len(deleted)} topics ({settings.topic_prefix}*); its consumer group goes with their offsets")
    except Exception as exc:  # noqa: BLE001 - see the module doc
        print(f"warning: the run's topics ({settings.topic_prefix}*) were not deleted: {exc}", file=sys.stderr)
    try:
        keys = delete_namespace_keys_now(settings)
        say(f"deleted the run's {keys} Redis keys (sessions, reply markers)")
    except Exception as exc:  # noqa: BLE001 - as above
        print(f"warning: the run's Redis keys were not deleted: {exc}", file=sys.stderr)
