"""``chatstream worker [--stage NAME ...]``: run the pipeline stages."""

from __future__ import annotations

import argparse

from streams.cli import CommandError
from streams.config import Settings
from streams.pipeline import STAGE_NAMES, describe


def register(sub) -> None:
    parser = sub.add_parser(
        "worker",
        help="run the pipeline stages (all four by default)",
        description="Run pipeline stages. The pipeline (streams/pipeline.py):\n\n" + describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--stage", action="append", choices=STAGE_NAMES, help="run only this stage (repeatable); stages scale separately"
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus scrape port (default from settings; 0 = off)")
    parser.set_defaults(handler=run)


def run(args, settings: Settings) -> int:
    from streams.runtime.worker import run_worker
    from streams.metrics import setup_metrics
    from streams.topics import check_topics

    problems = check_topics(settings)
    if problems:
        raise CommandError(
            "topics are not right:\n" + "\n".join(f"  {p.topic}: {p.problem}" for p in problems)
        )
    port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    setup_metrics(settings, prometheus_port=port or None)
    if port:
        from streams.metrics import register_lag_gauge

        register_lag_gauge(settings)
    run_worker(settings, tuple(args.stage or STAGE_NAMES))
    return 0
