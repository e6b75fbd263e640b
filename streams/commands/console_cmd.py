"""``chatstream console``: the operator's web console (traces, live metrics, three questions, dead letters).

A process of its own on 127.0.0.1 with its own operator token (see ``streams/console/__init__.py``
for why it is not a path of the gateway). It prints the address with the token in the fragment.
"""

from __future__ import annotations

from streams.config import Settings


def register(sub) -> None:
    parser = sub.add_parser("console", help="operator web console: traces, live charts, dead letters")
    parser.add_argument("--port", type=int, default=None, help="port (default: CHATSTREAM_CONSOLE_PORT, 8090)")
    parser.add_argument("--metrics-url", default=None,
                        help="worker metrics URL (default http://127.0.0.1:<metrics_port>/metrics)")
    parser.set_defaults(handler=run)


def console_address(settings: Settings, port: int | None = None) -> str:
    """The address an operator opens: the token rides in the fragment, which browsers never send."""
    from streams.console.app import operator_token

    return f"http://{settings.bind_host}:{port or settings.console_port}/#token={operator_token(settings)}"


def run(args, settings: Settings) -> int:
    import uvicorn

    from streams.console.app import create_app

    port = args.port or settings.console_port
    app = create_app(settings, metrics_url=args.metrics_url)
    print(f"chatstream console: {console_address(settings, port)}", flush=True)
    uvicorn.run(app, host=settings.bind_host, port=port, log_level="warning", server_header=False)
    return 0


def start_background(settings: Settings, metrics_url: str | None = None) -> tuple[str, int | None]:
    """Start ``chatstream console`` detached (for ``chatstream demo``), unless one already answers.

    Returns the address and the new process id (None when a console was already running). It keeps
    running after the demo so the newcomer can look at the demo's turns; its log is in <home>/logs.
    """
    import subprocess
    import sys
    from pathlib import Path

    from stack.ports import port_in_use

    address = console_address(settings)
    if port_in_use(settings.bind_host, settings.console_port):
        return address, None
    logs = Path(settings.home) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "console.log", "ab") as log:
        extra = ["--metrics-url", metrics_url] if metrics_url else []
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "console", *extra], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return address, proc.pid
