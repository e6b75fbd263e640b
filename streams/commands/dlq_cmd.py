"""``chatstream dlq list|replay``: see what could not be processed, and put it back after a fix.

Replay re-produces the original key, value and headers to the topic the record was read from, so
the turn keeps its message_id (and a turn that did get answered meanwhile is still answered once).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from processors.records import DeadLetter
from streams.cli import CommandError
from streams.codec import DecodeError, make_codec
from streams.config import Settings
from streams.topic_reader import TopicMissing, read_topic


def register(sub) -> None:
    parser = sub.add_parser("dlq", help="list or replay dead-lettered records")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="show dead letters with their reasons")
    listing.add_argument("--stage", help="only this stage")
    listing.add_argument("--limit", type=int, default=50, help="newest N (0 = all)")
    listing.set_defaults(handler=cmd_list)
    replay = actions.add_parser("replay", help="re-inject selected dead letters into their source topic")
    replay.add_argument("ids", nargs="*", help="dead letters as PARTITION:OFFSET (from `dlq list`)")
    replay.add_argument("--stage", help="all dead letters of this stage")
    replay.add_argument("--error", help="all dead letters whose error class is this")
    replay.add_argument("--dry-run", action="store_true")
    replay.set_defaults(handler=cmd_replay)


@dataclass
class Letter:
    partition: int
    offset: int
    record: DeadLetter

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"


def read_letters(settings: Settings, timeout_s: float = 10.0) -> list[Letter]:
    codec = make_codec(settings)
    letters: list[Letter] = []
    try:
        for msg in read_topic(settings, settings.topics.deadletter, timeout_s=timeout_s):
            try:
                letters.append(Letter(msg.partition(), msg.offset(), codec.decode(msg.value(), DeadLetter)))
            except DecodeError:
                continue
    except TopicMissing as exc:
        raise CommandError(str(exc)) from exc
    letters.sort(key=lambda l: l.record.failed_at)
    return letters


def cmd_list(args, settings: Settings) -> int:
    letters = [l for l in read_letters(settings) if not args.stage or l.record.stage == args.stage]
    if args.limit:
        letters = letters[-args.limit :]
    if not letters:
        print("no dead letters")
        return 0
    for l in letters:
        r = l.record
        when = dt.datetime.fromtimestamp(r.failed_at / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{l.ref:10s} {when} stage={r.stage} from {r.topic}[{r.partition}]@{r.offset} "
            f"message_id={r.message_id or '-'} replays={r.replay_count}\n    {r.error_class}: {r.error_message[:300]}"
        )
    return 0


def cmd_replay(args, settings: Settings) -> int:
    if not (args.ids or args.stage or args.error):
        raise CommandError("say what to replay: PARTITION:OFFSET ids, --stage or --error")
    letters = read_letters(settings)
    wanted = set(args.ids)
    chosen = [
        l for l in letters
        if l.ref in wanted
        or (args.stage and l.record.stage == args.stage and (not args.error or l.record.error_class == args.error))
        or (args.error and not args.stage and l.record.error_class == args.error)
    ]
    missing = wanted - {l.ref for l in letters}
    if missing:
        raise CommandError(f"no dead letter at {', '.join(sorted(missing))}")
    if args.dry_run:
        for l in chosen:
            print(f"would replay {l.ref} -> {l.record.topic} (message_id {l.record.message_id or '-'})")
        return 0
    asyncio.run(replay_letters(settings, chosen))
    print(f"replayed {len(chosen)} dead letter(s)")
    return 0


async def replay_letters(settings: Settings, letters: list[Letter]) -> None:
    """Re-produce each letter's original key, value and headers to its source topic (CLI and console)."""
    from streams.producer import PIPELINE_MAX_REQUEST, AsyncProducer

    producer = AsyncProducer(settings.kafka_bootstrap, **PIPELINE_MAX_REQUEST)
    try:
        for l in letters:
            r = l.record
            headers = [(h.key, h.value) for h in r.headers if h.key != "chatstream-replay-count"]
            headers.append(("chatstream-replay-count", str(r.replay_count + 1).encode()))
            await producer.send(r.topic, r.value, key=r.key, headers=headers)
    finally:
        await producer.close()
