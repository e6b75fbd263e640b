"""``chatstream replay``: run selected turns (or the labelled set) through the pipeline in a namespace of their own.

    chatstream replay --name prompt-v2 --since 24h --channel slack --config prompt-v2.toml
    chatstream replay --name labels-default --labels            # the bundled labelled question set
    chatstream replay --name prompt-v2 --resume                 # after Ctrl-C: publishes only the rest
    chatstream replay --name x --since 2h --dry-run             # what it would replay, nothing published

The replay's worker is a normal ``chatstream worker`` child process (``WorkerProcess``) with
``topic_prefix=replay-<name>.`` and the overrides as ``CHATSTREAM_*`` variables, so a replay of N turns
takes about N / pipeline throughput. No deliver process runs on a replay namespace (and ``deliver``
and the sinks refuse one): nothing reaches a channel. Rate limits are off in a replay by default
(turns are offered faster than users typed them; ``--keep-rate-limits`` keeps them), and the retrieval
timeout is at least 30 s (a cold replay worker must not be measured as a knowledge-base outage);
both can be set in the overrides file.
"""

from __future__ import annotations

import asyncio
import collections
import time

from streams.cli import CommandError
from streams.config import Settings


def register(sub) -> None:
    p = sub.add_parser("replay", help="replay turns from chat.inbound (or the labelled set) in a namespace of their own")
    p.add_argument("--name", required=True, help="replay name: topics replay-<name>.chat.*, results for `chatstream eval <name>`")
    p.add_argument("--from", dest="source", default="production", help="run to read chat.inbound from (production, a replay name, or a topic prefix)")
    p.add_argument("--labels", nargs="?", const="", default=None, metavar="PATH", help="replay the labelled question set instead (default: the bundled one)")
    p.add_argument("--since", help="sent at or after: ISO 8601 (UTC by default), epoch ms, or 30m/2h/1d ago")
    p.add_argument("--until", help="sent before (same formats)")
    p.add_argument("--session", action="append", default=[], help="only these session ids (repeatable)")
    p.add_argument("--channel", action="append", default=[], help="only these channels (repeatable)")
    p.add_argument("--tenant", action="append", default=[], help="only these tenants (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="at most this many turns (the earliest)")
    p.add_argument("--config", help="TOML file of configuration overrides (LLM, prompt, retriever, history, validation)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted replay of this name")
    p.add_argument("--dry-run", action="store_true", help="print what would be replayed; publish nothing")
    p.add_argument("--workers", type=int, default=1, help="worker processes for the replay namespace")
    p.add_argument("--scripted-llm-ms", type=float, default=None, help="run the scripted LLM with this latency for the replay (when no LLM is configured)")
    p.add_argument("--keep-rate-limits", action="store_true", help="keep the configured per-user rate limits")
    p.add_argument("--window", type=int, default=None, help="turns awaiting a reply at once (default: 2 x in-flight x workers)")
    p.add_argument("--timeout", type=float, default=900.0, help="stop waiting when no turn finished for this many seconds")
    p.set_defaults(handler=run)


def _summary(requests) -> str:  # type: ignore[no-untyped-def]
    if not requests:
        return "nothing matches"
    sessions = collections.Counter(r.session_id for r in requests)
    channels = collections.Counter(r.channel for r in requests)
    tenants = collections.Counter(r.tenant for r in requests)
    first, last = min(r.sent_at for r in requests), max(r.sent_at for r in requests)
    fmt = lambda ms: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))  # noqa: E731
    return (
        f"{len(requests)} turns in {len(sessions)} sessions, sent {fmt(first)} .. {fmt(last)} UTC\n"
        f"  channels: {', '.join(f'{k} {v}' for k, v in channels.most_common())}\n"
        f"  tenants:  {', '.join(f'{k} {v}' for k, v in tenants.most_common())}"
    )


def run(args, settings: Settings) -> int:
    from streams.codec import make_codec
    from streams.replay import overrides as ov
    from streams.replay.journal import Manifest, replay_dir
    from streams.replay.namespace import replay_prefix, run_prefix
    from streams.replay.source import LABELS, Selection, label_requests, load_labels, parse_time, select

    try:
        prefix = replay_prefix(args.name)
        overrides = ov.load(args.config) if args.config else {}
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    folder = replay_dir(settings.home, args.name)
    codec = make_codec(settings)

    if args.resume:
        if not (folder / "manifest.json").exists():
            raise CommandError(f"no replay named {args.name!r} to resume under {folder}")
        manifest = Manifest.load(folder)
        overrides = ov.validate(manifest.overrides) if not args.config else overrides
        requests = manifest.requests
    else:
        if (folder / "published.log").exists() and not args.dry_run:
            raise CommandError(f"a replay named {args.name!r} exists ({folder}): use --resume, or another --name")
        if args.labels is not None:
            labels = load_labels(args.labels or LABELS)
            requests = label_requests(labels, tenant=(args.tenant or [settings.tenant])[0])
            selection = Selection(sessions=args.session, limit=args.limit)
            requests = selection.apply(requests)
            source = f"labels:{args.labels or 'bundled'}"
        else:
            source_prefix = run_prefix(args.source)
            if source_prefix == prefix:
                raise CommandError("a replay cannot read its own namespace")
            try:
                selection = Selection(
                    since_ms=parse_time(args.since), until_ms=parse_time(args.until), sessions=args.session,
                    channels=args.channel, tenants=args.tenant, limit=args.limit,
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            from streams.topic_reader import TopicMissing

            try:
                requests = select(settings.derive(topic_prefix=source_prefix), codec, selection)
            except TopicMissing as exc:
                raise CommandError(str(exc)) from exc
            source = args.source
        manifest = Manifest(args.name, prefix, source, selection.as_dict(), ov.printable(overrides), requests, int(time.time() * 1000))

    print(f"replay {args.name}: namespace {prefix}chat.*  source {manifest.source}")
    print("  " + _summary(requests).replace("\n", "\n  "))
    if overrides:
        print("  overrides: " + ", ".join(f"{k}={v}" for k, v in ov.printable(overrides).items()))
    if args.dry_run:
        for r in requests[:20]:
            print(f"  {r.message_id}  {r.session_id}  {r.channel}  {r.text[:70]!r}")
        if len(requests) > 20:
            print(f"  ... and {len(requests) - 20} more")
        print("dry run: nothing published")
        return 0
    if not requests:
        return 0

    manifest.save(folder)
    return _execute(args, settings, manifest, overrides, folder)


def _execute(args, settings: Settings, manifest, overrides: dict, folder) -> int:  # type: ignore[no-untyped-def]
    from pydantic import SecretStr
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from streams.dev.worker_process import WorkerProcess
    from streams.replay import overrides as ov
    from streams.replay.journal import PublishedLog
    from streams.replay.runner import run_replay
    from streams.topics import create_topics

    base = dict(topic_prefix=manifest.topic_prefix, consumer_group=f"{manifest.topic_prefix}chatstream")
    if not args.keep_rate_limits:
        base.update(rate_limit_per_minute=1e9, rate_limit_burst=1_000_000)
    # a replay measures answers, not a cold worker on a busy machine: a lookup that waits out the
    # production timeout while the fresh worker embeds its first queries would count as an outage
    base["retrieval_timeout_s"] = max(settings.retrieval_timeout_s, 30.0)
    llm = None
    if args.scripted_llm_ms is not None and "llm_base_url" not in overrides:
        from streams.dev.llm_process import LLMServerProcess

        llm = LLMServerProcess(args.scripted_llm_ms).start()
        base.update(llm_base_url=llm.base_url, llm_api_key=SecretStr("replay"), llm_model="scripted-llm")
    replay_settings = settings.derive(**base, **overrides)
    create_topics(replay_settings)
    env = ov.to_env({**{k: v for k, v in base.items() if k.startswith(("llm_", "retrieval_"))}, **overrides})
    workers = [
        WorkerProcess(replay_settings, log_path=folder / f"worker-{i}.log", **env) for i in range(max(1, args.workers))
    ]
    log = PublishedLog(folder)
    window = args.window or 2 * replay_settings.max_in_flight * len(workers)
    outcome = None
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_started(180)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("turns"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        with Progress(*columns, transient=False) as progress:
            outcome = asyncio.run(
                run_replay(replay_settings, manifest.requests, log, source=manifest.source, window=window,
                           timeout_s=args.timeout, progress=progress)
            )
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(log.ids)} of {len(manifest.requests)} turns published. "
              f"Continue with: chatstream replay --name {manifest.name} --resume")
        return 130
    finally:
        log.close()
        for worker in workers:
            worker.terminate(60)
        if llm is not None:
            llm.stop()
    rate = outcome.done / outcome.elapsed_s if outcome.elapsed_s else 0.0
    print(f"replay {manifest.name}: {outcome.done}/{outcome.total} turns answered in {outcome.elapsed_s:.1f} s "
          f"({rate:.1f} turns/s, {outcome.published_now} published by this run)")
    print(f"evaluate with: chatstream eval {manifest.name}   (compare: chatstream eval compare production {manifest.name})")
    return 0 if outcome.complete else 1
