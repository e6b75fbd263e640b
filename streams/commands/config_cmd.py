"""``chatstream config``: the effective settings, secrets masked."""

from __future__ import annotations

import json

from streams.config import SECTIONS, Settings


def register(sub) -> None:
    parser = sub.add_parser("config", help="print the effective settings (secrets masked)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run)


def run(args, settings: Settings) -> int:
    values = settings.masked()
    if args.json:
        print(json.dumps(values, indent=2, default=str))
    else:
        width = max(len(k) for k in values)
        for section in SECTIONS:  # grouped as declared, with the section's purpose as a heading
            print(f"# {(section.__doc__ or section.__name__).strip()}")
            for key in section.model_fields:
                print(f"CHATSTREAM_{key.upper():{width}s} = {values[key]}")
    return 0
