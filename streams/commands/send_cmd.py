"""``chatstream send "text" --session S``: publish one turn and print the reply."""

from __future__ import annotations

import asyncio

from streams.cli import CommandError
from streams.config import Settings


def register(sub) -> None:
    parser = sub.add_parser("send", help="publish a turn on chat.inbound and print the reply")
    parser.add_argument("text")
    parser.add_argument("--session", required=True, help="session id (the Kafka key)")
    parser.add_argument("--user", default="cli-user")
    parser.add_argument("--channel", default="cli")
    parser.add_argument("--tenant", default=None)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the reply")
    parser.set_defaults(handler=run)


def format_reply(response) -> str:
    lines = [f"[{response.status.value}] {response.text}"]
    for c in response.citations:
        lines.append(f"  - {c.title} ({c.source}) score={c.score:.2f}")
    lines.append(
        f"  message_id={response.message_id} latency={response.latency_ms} ms model={response.model or '-'} "
        f"tokens={response.prompt_tokens}/{response.completion_tokens}"
    )
    return "\n".join(lines)


def run(args, settings: Settings) -> int:
    from streams import tracing
    from streams.client import ChatClient, new_request

    tracing.setup_tracing(settings, f"{settings.service_name}-cli")

    async def go() -> int:
        async with ChatClient(settings) as client:
            request = new_request(
                args.text, args.session, user_id=args.user, channel=args.channel, tenant=args.tenant or settings.tenant
            )
            try:
                response = await client.ask(request, timeout_s=args.timeout)
            except asyncio.TimeoutError:
                raise CommandError(
                    f"no reply for {request.message_id} within {args.timeout:.0f} s: is a worker running (`chatstream worker`)?"
                )
            print(format_reply(response))
            return 0

    try:
        return asyncio.run(go())
    finally:
        tracing.shutdown_tracing()
