"""``chatstream topics create|check``."""

from __future__ import annotations

from streams.cli import CommandError
from streams.config import Settings


def register(sub) -> None:
    parser = sub.add_parser("topics", help="create or check the pipeline's Kafka topics")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    actions.add_parser("create", help="create every topic (idempotent)").set_defaults(handler=create)
    actions.add_parser("check", help="check partitions of every topic").set_defaults(handler=check)
    delete = actions.add_parser("delete", help="delete a namespace (a replay once evaluated): its topics, its consumer group "
                                "and its Redis keys (sessions, reply markers)")
    delete.add_argument("--prefix", required=True, help="the namespace's topic prefix, e.g. replay-NAME.")
    delete.set_defaults(handler=delete_namespace)


def create(args, settings: Settings) -> int:
    from streams.topics import create_topics

    try:
        for topic, state in sorted(create_topics(settings).items()):
            print(f"{topic:40s} {state} ({settings.partitions} partitions)")
    except Exception as exc:
        raise CommandError(f"cannot create topics on {settings.kafka_bootstrap}: {exc}. Is Kafka up (`chatstream stack status`)?")
    return 0


def delete_namespace(args, settings: Settings) -> int:
    from streams.stages.clients import delete_namespace_keys_now
    from streams.topics import delete_topics

    prefix = args.prefix
    if not prefix.endswith(".") or prefix == settings.topic_prefix:
        raise CommandError(f"refusing to delete {prefix!r}: give a namespace's prefix ending in '.', "
                           "not the live one (replays are replay-NAME., bench runs bench-ID.)")
    namespace = settings.derive(topic_prefix=prefix)
    try:
        deleted = delete_topics(namespace)
    except Exception as exc:
        raise CommandError(f"cannot delete topics on {settings.kafka_bootstrap}: {exc}")
    print(f"deleted {len(deleted)} topics ({prefix}*); the namespace's consumer group goes with their offsets")
    try:
        keys = delete_namespace_keys_now(namespace)
    except Exception as exc:
        raise CommandError(f"topics deleted, but not the namespace's Redis keys: {exc}. Is Redis up (`chatstream stack status`)?")
    print(f"deleted {keys} Redis keys of the namespace (sessions, reply markers)")
    return 0


def check(args, settings: Settings) -> int:
    from streams.topics import check_topics

    problems = check_topics(settings)
    for p in problems:
        print(f"{p.topic}: {p.problem}")
    if not problems:
        print("all topics present with", settings.partitions, "partitions")
    return 1 if problems else 0
