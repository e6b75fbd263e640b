"""``chatstream eval``: figures of a run, and which of two runs is better, from their topics alone.

    chatstream eval production                       # latency, tokens, cost, statuses, labels ...
    chatstream eval prompt-v2 --save v2.jsonl         # a replay, its per-turn records saved too
    chatstream eval compare production prompt-v2 --html report.html
    chatstream eval calibrate                         # the answerability threshold on the labelled set

A RUN is ``production``, a replay name (``chatstream replay --name``) or a topic prefix ending in ".".
The bundled labelled set (``streams/demo/labels.jsonl``) joins by message id or question text;
``--labels PATH`` uses another, ``--no-labels`` none.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from streams.cli import CommandError
from streams.config import Settings


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run (RUN), compare two (compare A B), or calibrate answerability")
    p.add_argument("what", nargs="+", metavar="RUN | compare A B | calibrate")
    p.add_argument("--labels", default=None, help="labels JSONL (default: the bundled labelled set)")
    p.add_argument("--no-labels", action="store_true", help="no labels")
    p.add_argument("--html", default=None, help="compare: write the HTML report here (default eval-A-vs-B.html)")
    p.add_argument("--save", default=None, help="eval: also write the per-turn records as JSON lines")
    p.add_argument("--json", action="store_true", help="eval: print the figures as JSON")
    p.add_argument("--resamples", type=int, default=2000, help="compare: bootstrap resamples")
    p.set_defaults(handler=run)


def _labels(args):  # type: ignore[no-untyped-def]
    from streams.replay.source import LABELS, load_labels

    if args.no_labels:
        return []
    try:
        return load_labels(args.labels or LABELS)
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from exc


def _load(settings: Settings, name: str):  # type: ignore[no-untyped-def]
    from streams.evaluation.run import load_records_file, load_run

    if name.endswith(".jsonl") and Path(name).exists():
        return load_records_file(Path(name))
    records = load_run(settings, name).records
    if not any(r.status for r in records):
        raise CommandError(f"run {name!r} has no replies (is the name right? `chatstream replay --name` sets it)")
    return records


def run(args, settings: Settings) -> int:
    what = args.what
    if what[0] == "compare":
        if len(what) != 3:
            raise CommandError("usage: chatstream eval compare RUN_A RUN_B")
        return _compare(args, settings, what[1], what[2])
    if what[0] == "calibrate":
        return _calibrate(args, settings)
    if len(what) != 1:
        raise CommandError("usage: chatstream eval RUN")
    from streams.evaluation.metrics import summarize
    from streams.evaluation.report import summary_text

    records = _load(settings, what[0])
    summary = summarize(records, settings.model_prices, _labels(args))
    print(json.dumps(summary, indent=1, default=str) if args.json else summary_text(what[0], summary))
    if args.save:
        with open(args.save, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(dataclasses.asdict(record)) + "\n")
    return 0


def _compare(args, settings: Settings, name_a: str, name_b: str) -> int:
    from streams.evaluation.compare import compare
    from streams.evaluation.metrics import summarize
    from streams.evaluation.report import comparison_html, comparison_text

    labels = _labels(args)
    a, b = _load(settings, name_a), _load(settings, name_b)
    result = compare(a, b, settings.model_prices, labels, name_a=name_a, name_b=name_b, resamples=args.resamples)
    if not result.pairs:
        raise CommandError(f"{name_a} and {name_b} share no message id: nothing to pair")
    print(comparison_text(result))
    out = Path(args.html or f"eval-{Path(name_a).stem}-vs-{Path(name_b).stem}.html")
    out.write_text(
        comparison_html(result, summarize(a, settings.model_prices, labels), summarize(b, settings.model_prices, labels)),
        encoding="utf-8",
    )
    print(f"HTML report: {out}")
    return 0


def _calibrate(args, settings: Settings) -> int:
    import asyncio

    from streams.evaluation.calibrate import calibrate, table

    labels = _labels(args)
    if not labels:
        raise CommandError("calibration needs labels")
    points = asyncio.run(calibrate(settings, labels))
    print(table(points, current=settings.answerability_min_relevance))
    return 0
