"""CLI commands of the edges: ``gateway``, ``deliver``, ``sink escalations``, ``sink transcripts``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any, Awaitable, Callable

log = logging.getLogger("chatstream.connectors")


def _run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
    return 0


def gateway(args: argparse.Namespace, settings: Any) -> int:
    import uvicorn

    from connectors.gateway.app import create_app

    port = args.port if args.port is not None else settings.gateway_port
    host = args.host or settings.bind_host
    app = create_app(settings)
    if settings.gateway_metrics_port:
        from streams.metrics import setup_metrics

        setup_metrics(settings, settings.gateway_metrics_port)  # chatstream_feedback_total for Prometheus
    from connectors.gateway.serving import uvicorn_config

    config, _ = uvicorn_config(app, settings, host, port, stats=app.state.gateway.stats, log_level="info")
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 3  # like uvicorn.run: 3 = it did not start (port taken, lifespan failed)


def deliver(args: argparse.Namespace, settings: Any) -> int:
    from connectors.delivery.deliver import run

    return _run_until_signal(lambda stop: run(settings, stop))


def sink_escalations(args: argparse.Namespace, settings: Any) -> int:
    from connectors.sinks.escalations import run
    from streams.cli import CommandError

    if not args.to.startswith(("http://", "https://")):
        raise CommandError(f"--to must be an http(s) URL, got {args.to!r}")
    return _run_until_signal(lambda stop: run(settings, args.to, args.preset, stop, args.group))


def sink_transcripts(args: argparse.Namespace, settings: Any) -> int:
    from connectors.sinks.transcripts import run
    from streams.cli import CommandError

    if not args.to.startswith(("http://", "https://")):
        raise CommandError(f"--to must be an http(s) URL, got {args.to!r}")
    return _run_until_signal(lambda stop: run(settings, args.to, stop, args.group))


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("gateway", help="run the channel gateway (web, Slack, WhatsApp, Teams)")
    p.add_argument("--port", type=int, default=None, help="port (default: CHATSTREAM_GATEWAY_PORT, 8000)")
    p.add_argument("--host", default=None, help="bind address (default: CHATSTREAM_BIND_HOST)")
    p.set_defaults(handler=gateway)

    p = subparsers.add_parser("deliver", help="send replies from chat.outbound back to their channels")
    p.set_defaults(handler=deliver)

    sink = subparsers.add_parser("sink", help="push results to ticketing/CRM endpoints")
    sub = sink.add_subparsers(dest="sink", metavar="SINK")
    sub.required = True
    p = sub.add_parser("escalations", help="one ticket per escalation via a webhook")
    p.add_argument("--to", required=True, help="ticket webhook URL")
    p.add_argument("--preset", choices=["generic", "zendesk"], default="generic", help="payload shape")
    p.add_argument("--group", default=None, help="consumer group (instances sharing it share the work)")
    p.set_defaults(handler=sink_escalations)
    p = sub.add_parser("transcripts", help="finished sessions to a CRM endpoint")
    p.add_argument("--to", required=True, help="CRM webhook URL")
    p.add_argument("--group", default=None, help="consumer group (instances sharing it share the work)")
    p.set_defaults(handler=sink_transcripts)
