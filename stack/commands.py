"""``chatstream stack up|down|status|logs``: the local Kafka, Redis, Weaviate and Jaeger."""

from __future__ import annotations

import argparse
import logging

from stack.manager import SERVICE_NAMES, Stack
from stack.service import StackError, tail_file
from streams.commands import CommandError
from streams.config import Settings

NAMES_HELP = f"services ({', '.join(SERVICE_NAMES)}); default: all"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stack",
        help="run the local services (Kafka, Redis, Weaviate, Jaeger)",
        description="Local services bound to 127.0.0.1, data in $CHATSTREAM_HOME, builds cached in "
        "$CHATSTREAM_CACHE_DIR. Without Java/Go use: docker compose -f docker-compose.kafka.yml up -d",
    )
    actions = parser.add_subparsers(dest="stack_action", metavar="ACTION")
    actions.required = True

    up = actions.add_parser("up", help="build what is missing, start what is not running, wait until ready")
    up.add_argument("services", nargs="*", metavar="NAME", help=NAMES_HELP)
    up.add_argument("--brokers", type=int, choices=(1, 3), default=None,
                    help="Kafka nodes (default: CHATSTREAM_KAFKA_BROKERS, 1); 3 = a KRaft cluster, replication 3")
    up.set_defaults(handler=cmd_up)

    down = actions.add_parser("down", help="stop the services this stack started (data is kept)")
    down.add_argument("services", nargs="*", metavar="NAME", help=NAMES_HELP)
    down.add_argument("--brokers", type=int, choices=(1, 3), default=None, help="as given to `up`")
    down.set_defaults(handler=cmd_down)

    status = actions.add_parser("status", help="each service up or down, with its endpoints (exit 3 if any is down)")
    status.add_argument("services", nargs="*", metavar="NAME", help=NAMES_HELP)
    status.add_argument("--brokers", type=int, choices=(1, 3), default=None, help="as given to `up`")
    status.set_defaults(handler=cmd_status)

    logs = actions.add_parser("logs", help="the tail of a service's log (or of its build log with --build)")
    logs.add_argument("name", choices=(*SERVICE_NAMES, "kafka2", "kafka3"))
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("--build", action="store_true", help="show the log of its last build instead")
    logs.set_defaults(handler=cmd_logs)


def _cluster(args: argparse.Namespace, settings: Settings) -> Settings:
    """``--brokers N`` overrides ``kafka_brokers`` (clients then bootstrap from every node)."""
    if args.brokers is None or args.brokers == settings.kafka_brokers:
        return settings
    return settings.derive(kafka_brokers=args.brokers)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    _quiet_clients(args)
    settings = _cluster(args, settings)
    try:
        Stack(settings, out=_say).up(args.services)
    except StackError as exc:
        raise CommandError(f"stack up failed:\n{exc}") from exc
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    settings = _cluster(args, settings)
    try:
        Stack(settings, out=_say).down(args.services)
    except StackError as exc:
        raise CommandError(f"stack down failed:\n{exc}") from exc
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    _quiet_clients(args)
    settings = _cluster(args, settings)
    try:
        rows = Stack(settings, out=_say).status(args.services)
    except StackError as exc:
        raise CommandError(str(exc)) from exc
    for row in rows:
        pid = f"pid {row.pid}" if row.pid else ""
        line = f"{row.service.name:<9} {row.state:<9} {pid:<10} {row.service.describe_endpoints()}"
        _say(line + (f"  ({row.detail})" if row.detail else ""))
    return 0 if all(row.state == "up" for row in rows) else 3


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    if args.name in ("kafka2", "kafka3") and settings.kafka_brokers < 3:
        settings = settings.derive(kafka_brokers=3)  # the other nodes of a `--brokers 3` cluster
    stack = Stack(settings, out=_say)
    (service,) = stack.select([args.name])
    if args.build:
        build = service.build()
        if build is None:
            raise CommandError(f"{args.name} has nothing to build")
        path = service.cache / "logs" / f"{build.name}-build.log"
        if not path.exists():  # a build run by hand, as the README's manual steps name it
            path = service.cache / "logs" / f"{service.name}-build.log"
    else:
        path = service.log_file
    _say(f"==> {path} <==")
    _say(tail_file(path, args.lines))
    return 0


def _quiet_clients(args: argparse.Namespace) -> None:
    """Readiness probes poll; their HTTP clients' per-request INFO lines would bury the progress output."""
    if not getattr(args, "verbose", False):
        for name in ("httpx", "httpcore", "weaviate"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _say(line: str) -> None:
    print(line, flush=True)
