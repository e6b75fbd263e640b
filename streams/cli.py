"""The ``chatstream`` command.

Each command group lives in the module that owns it and registers itself here through
``register(subparsers)``; this file only lists them, so adding a command never means editing
another team's module.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from streams.commands import CommandError
from streams.config import Settings

__all__ = ["CommandError", "build_parser", "main"]

# module path -> it defines register(subparsers) and its handlers take (args, settings)
COMMAND_MODULES = (
    "stack.commands",  # stack up|down|status|logs
    "streams.commands.config_cmd",  # config
    "streams.commands.topics_cmd",  # topics create|check
    "streams.commands.worker_cmd",  # worker [--stage]
    "streams.commands.send_cmd",  # send
    "streams.commands.ingest_cmd",  # ingest PATH
    "streams.commands.demo_cmd",  # demo
    "streams.commands.bench_cmd",  # bench
    "streams.commands.soak_cmd",  # soak --minutes N --rate R
    "streams.commands.dlq_cmd",  # dlq list|replay
    "streams.commands.trace_cmd",  # trace MESSAGE_ID
    "streams.commands.stats_cmd",  # stats
    "streams.commands.replay_cmd",  # replay
    "streams.commands.eval_cmd",  # eval RUN | eval compare A B | eval calibrate
    "streams.commands.console_cmd",  # console (operator web app)
    "streams.dev.commands",  # dev llm-server
    "connectors.commands",  # gateway, deliver, sink
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatstream", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        # a command module that cannot be imported is a broken install: say so, never skip it
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore", "weaviate", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings()
    try:
        return int(args.handler(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except CommandError as exc:
        print(f"chatstream: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
