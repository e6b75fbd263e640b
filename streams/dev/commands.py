"""``chatstream dev ...``: tools for development, tests and benchmarks."""

from __future__ import annotations

import argparse

from streams.cli import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    dev = subparsers.add_parser("dev", help="development tools (scripted LLM server)")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="DEV_COMMAND")
    dev_sub.required = True
    llm = dev_sub.add_parser(
        "llm-server",
        help="run the scripted OpenAI-compatible server (chat completions, streaming, embeddings)",
        description=(
            "A scripted OpenAI-compatible server: grounded answers quoted from the prompt's passages, "
            "scripted latency and errors. Change its behaviour at run time with POST /_script "
            '(e.g. {"fail_next": [{"status": 429, "retry_after": 1}], "mode": "ok"}) and read '
            "GET /_stats. Point chatstream at it with CHATSTREAM_LLM_BASE_URL=http://HOST:PORT/v1."
        ),
    )
    llm.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    llm.add_argument("--port", type=int, default=8001, help="port (default 8001; 0 picks a free one)")
    llm.add_argument("--latency-ms", type=float, default=0.0, help="delay before each chat answer")
    llm.add_argument("--error-rate", type=float, default=0.0, help="share of chat requests failing (0..1)")
    llm.add_argument("--error-status", type=int, default=500, help="HTTP status of the random failures")
    llm.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds sent with 429s")
    llm.add_argument("--model", default="scripted-llm", help="model name listed by /v1/models")
    llm.add_argument("--embedding-dim", type=int, default=384, help="dimension of /v1/embeddings vectors")
    llm.add_argument("--seed", type=int, default=None, help="seed for the random failures")
    llm.add_argument("--token-ms", type=float, default=0.0, help="streamed answers: pause between tokens")
    llm.add_argument("--tokens", type=int, default=0, help="streamed answers: exactly this many tokens (0 = as is)")
    llm.set_defaults(handler=run_llm_server)
    cpu = dev_sub.add_parser(
        "llm-client-cpu",
        help="client CPU per chat call: the openai SDK against the lean httpx transport, in one run",
    )
    cpu.add_argument("--calls", type=int, default=1000, help="calls per client and mode")
    cpu.add_argument("--concurrency", type=int, default=16, help="calls in flight at once")
    cpu.add_argument("--tokens", type=int, default=60, help="tokens per streamed answer")
    cpu.set_defaults(handler=run_llm_client_cpu)
    tracing_cpu = dev_sub.add_parser(
        "tracing-cpu",
        help="tracing CPU per turn: one turn's spans created, ended and exported to the OTLP endpoint; "
        "start_as_current_span vs active_span, the SDK's OTLP exporter vs the lean one, in one run",
    )
    tracing_cpu.add_argument("--turns", type=int, default=2000, help="turns per round and combination")
    tracing_cpu.add_argument("--rounds", type=int, default=5, help="rounds (the median is reported)")
    tracing_cpu.set_defaults(handler=run_tracing_cpu)


def run_llm_client_cpu(args: argparse.Namespace, settings: object) -> int:
    from streams.dev.llm_client_cpu import main

    return main(args.calls, args.concurrency, args.tokens)


def run_tracing_cpu(args: argparse.Namespace, settings) -> int:  # type: ignore[no-untyped-def]
    from streams.dev.tracing_cpu import main

    if not settings.otlp_endpoint:
        raise CommandError("tracing-cpu exports to CHATSTREAM_OTLP_ENDPOINT: set it (a running Jaeger)")
    return main(settings.otlp_endpoint, args.turns, args.rounds)


def run_llm_server(args: argparse.Namespace, settings: object) -> int:
    from streams.dev.llm_server import ScriptState, serve

    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be in 0..65535, got {args.port}")
    try:
        state = ScriptState(seed=args.seed)
        state.update(
            {
                "latency_ms": args.latency_ms,
                "error_rate": args.error_rate,
                "error_status": args.error_status,
                "retry_after": args.retry_after,
                "model": args.model,
                "embedding_dim": args.embedding_dim,
                "token_ms": args.token_ms,
                "tokens": args.tokens,
            }
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print(
        f"scripted LLM server on http://{args.host}:{args.port}/v1 "
        f"(model {args.model}, latency {args.latency_ms:g} ms, error rate {args.error_rate:g}); "
        "script it with POST /_script, stats at GET /_stats",
        flush=True,
    )
    try:
        serve(args.host, args.port, state)
    except OSError as exc:
        raise CommandError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    return 0
