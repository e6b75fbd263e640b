"""``chatstream soak``: turns at a steady rate for N minutes with a fault every few minutes.

Like ``bench`` it runs in its own topic namespace with its own worker and scripted LLM, on the stack
``CHATSTREAM_*`` points at. Every ``--fault-every`` minutes it injects the next fault of ``--faults``
in turn: ``worker`` (kill -9 and start a new one), ``redis`` (stop and start the stack's Redis: only on
a stack of your own), ``llm`` (the LLM answers 503 for 10 s), ``broker`` (restart one node of a
``kafka_brokers=3`` cluster). Each minute it prints throughput, p99 latency of the replies that came
in that minute, worker RSS and open fds, consumer lag and Redis memory; at the end: lost and doubled
turns, and the drift between the first and the last five minutes (halves when shorter). It stops by
itself: sending ends after ``--minutes``; it then waits for the backlog while replies keep coming, and
gives up after ``--drain`` seconds without one (those turns count as lost).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field

from pydantic import SecretStr

from streams.config import Settings

FAULTS = ("worker", "redis", "llm", "broker")


def register(sub) -> None:
    parser = sub.add_parser("soak", help="steady turns for N minutes with a fault every few minutes; per-minute report")
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--rate", type=float, required=True, help="turns per second")
    parser.add_argument("--llm-latency-ms", type=float, default=300)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--fault-every", type=float, default=3.0, help="minutes between faults (0 = none)")
    parser.add_argument("--faults", default="worker,redis,llm,broker",
                        help=f"comma list of {', '.join(FAULTS)}; broker only with kafka_brokers=3")
    parser.add_argument("--keep-topics", action="store_true",
                        help="leave the run's namespace: its soak-<id>.* topics and Redis keys (deleted by default)")
    parser.add_argument("--drain", type=float, default=60,
                        help="after the last turn, stop waiting for replies once none came for this many seconds")
    parser.set_defaults(handler=run)


@dataclass
class Minute:
    index: int
    sent: int = 0
    replies: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    rss_mb: float = 0.0
    fds: int = 0
    lag: int = 0
    redis_mb: float = 0.0
    fault: str = ""

    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _proc_figures(pid: int) -> tuple[float, int]:
    """(RSS MiB, open fds) of a live process; zeros when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            rss = next((int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:")), 0.0)
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0.0, 0


class Soak:
    def __init__(self, settings: Settings, args, llm) -> None:  # type: ignore[no-untyped-def]
        from streams.dev.worker_process import WorkerProcess

        self.settings = settings
        self.args = args
        self.llm = llm
        self.worker = WorkerProcess(settings)
        self.faults = [f for f in args.faults.split(",") if f]
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
        if settings.kafka_brokers < 3 and "broker" in self.faults:
            self.faults.remove("broker")  # one broker: restarting it is an outage, not a fault to ride out
        self.fault_log: list[tuple[float, str, str]] = []

    # --- faults ---------------------------------------------------------------------------------
    async def inject(self, name: str) -> str:
        from stack.manager import Stack

        if name == "worker":
            self.worker.kill()
            from streams.dev.worker_process import WorkerProcess

            self.worker = WorkerProcess(self.settings).start()
            return f"worker kill -9, new pid {self.worker.pid}"
        if name == "llm":
            import httpx

            base = self.llm.base_url.removesuffix("/v1")
            async with httpx.AsyncClient(timeout=5) as http:
                await http.post(f"{base}/_script", json={"error_rate": 1.0, "error_status": 503})
                await asyncio.sleep(10)
                await http.post(f"{base}/_script", json={"error_rate": 0.0})
            return "LLM 503 for 10 s"
        stack = Stack(self.settings, out=lambda _line: None)
        if name == "redis":
            began = time.monotonic()
            await asyncio.to_thread(stack.down, ["redis"])
            await asyncio.to_thread(stack.up, ["redis"])
            return f"Redis restarted ({time.monotonic() - began:.1f} s)"
        node = ["kafka", "kafka2", "kafka3"][len(self.fault_log) % 3]
        began = time.monotonic()
        await asyncio.to_thread(stack.down, [node])
        await asyncio.to_thread(stack.up, [node])
        return f"broker {node} restarted ({time.monotonic() - began:.1f} s)"

    # --- figures --------------------------------------------------------------------------------
    async def sample(self, minute: Minute, redis) -> None:  # type: ignore[no-untyped-def]
        from streams.lag import consumer_lag

        minute.rss_mb, minute.fds = _proc_figures(self.worker.pid)
        try:
            minute.lag = sum((await asyncio.to_thread(consumer_lag, self.settings)).values())
        except Exception:  # noqa: BLE001 - a broker or group in flux: report -1, keep soaking
            minute.lag = -1
        for attempt in (1, 2):  # the first call after a Redis restart finds the old connection dead
            try:
                minute.redis_mb = int((await redis.info("memory"))["used_memory"]) / 2**20
                break
            except Exception:  # noqa: BLE001 - Redis restarting right now
                minute.redis_mb = float("nan")

    async def drive(self) -> tuple[list[Minute], int, int, int, int]:
        import redis.asyncio as aioredis

        from processors.records import now_ms
        from streams.client import ChatClient, new_request

        args = self.args
        total = int(args.minutes * 60 * args.rate)
        sessions = [f"soak:{uuid.uuid4().hex[:8]}" for _ in range(args.sessions)]
        minutes = [Minute(i) for i in range(int(args.minutes + 0.999))]
        redis = aioredis.from_url(self.settings.redis_connection_url, socket_timeout=5)
        async with ChatClient(self.settings) as client:
            started = time.monotonic()
            seen = 0
            next_fault = args.fault_every * 60 if args.fault_every > 0 else float("inf")
            fault_task: asyncio.Task | None = None
            requests = []
            sends = []
            current = 0
            for i in range(total):
                at = started + i / args.rate
                while time.monotonic() < at:
                    await asyncio.sleep(min(0.05, max(0.0, at - time.monotonic())))
                elapsed = time.monotonic() - started
                minute = minutes[min(len(minutes) - 1, int(elapsed // 60))]
                if minute.index != current:  # a minute ended: count its replies, sample the processes
                    seen = self._close_minute(minutes[current], client, seen)
                    await self.sample(minutes[current], redis)
                    self._print(minutes[current])
                    current = minute.index
                if elapsed >= next_fault and (fault_task is None or fault_task.done()) and self.faults:
                    name = self.faults[len(self.fault_log) % len(self.faults)]
                    self.fault_log.append((elapsed, name, "running"))
                    minute.fault = name
                    fault_task = asyncio.create_task(self._run_fault(name, len(self.fault_log) - 1))
                    next_fault += args.fault_every * 60
                sid = sessions[i % len(sessions)]
                request = new_request(f"How do I export my data? (soak turn {i})", sid, user_id=f"soak-{sid}", channel="bench")
                request.sent_at = now_ms()
                requests.append(request)
                minute.sent += 1
                sends.append(asyncio.create_task(client.send(request)))
                if len(sends) > 200:
                    await asyncio.gather(*sends)
                    sends = []
            await asyncio.gather(*sends)
            if fault_task is not None:
                await fault_task
            last = minutes[current]
            # a backlog drains as long as replies keep coming; give up after --drain s without one
            deadline, got = time.monotonic() + args.drain, len(client.reply_order)
            while any(r.message_id not in client.replies for r in requests) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                if len(client.reply_order) != got:
                    deadline, got = time.monotonic() + args.drain, len(client.reply_order)
            await client.settle(3.0)
            self._close_minute(last, client, seen)
            await self.sample(last, redis)
            self._print(last)
            await redis.aclose()
            lost = sum(1 for r in requests if r.message_id not in client.replies)
            doubled = sum(1 for r in requests if len(client.replies.get(r.message_id, [])) > 1)
            order = 0
            for sid in sessions:
                expected = [r.message_id for r in requests if r.session_id == sid]
                wanted = set(expected)
                got = list(dict.fromkeys(r.message_id for r in client.reply_order if r.message_id in wanted))
                order += got != expected
            return minutes, total, lost, doubled, order

    async def _run_fault(self, name: str, index: int) -> None:
        try:
            what = await self.inject(name)
        except Exception as exc:  # noqa: BLE001 - report it; the soak goes on
            what = f"{name} FAILED: {exc}"
        at = self.fault_log[index][0]
        self.fault_log[index] = (at, name, what)
        print(f"  [{at / 60:5.1f} min] fault: {what}", flush=True)

    @staticmethod
    def _close_minute(minute: Minute, client, seen: int) -> int:  # type: ignore[no-untyped-def]
        arrived = client.reply_order[seen:]
        minute.replies = len(arrived)
        minute.latencies_ms = [float(r.latency_ms) for r in arrived]
        return seen + len(arrived)

    @staticmethod
    def _print(m: Minute) -> None:
        print(f"  min {m.index + 1:3d}  sent {m.sent:6d}  replies {m.replies:6d} ({m.replies / 60:6.1f}/s)  "
              f"p99 {m.p99():7.0f} ms  worker RSS {m.rss_mb:6.0f} MiB  fds {m.fds:4d}  lag {m.lag:6d}  "
              f"redis {m.redis_mb:6.1f} MiB  {('fault: ' + m.fault) if m.fault else ''}", flush=True)


def drift(minutes: list[Minute]) -> str:
    """First vs last five minutes (or halves): replies/s, p99, worker RSS, Redis memory."""
    full = [m for m in minutes if m.sent]
    span = min(5, max(1, len(full) // 2))
    first, last = full[:span], full[-span:]

    def avg(ms: list[Minute], fn) -> float:  # type: ignore[no-untyped-def]
        values = [fn(m) for m in ms]
        return sum(values) / len(values) if values else float("nan")

    parts = []
    for label, fn, unit in (
        ("replies", lambda m: m.replies / 60, "/s"), ("p99", lambda m: m.p99(), " ms"),
        ("worker RSS", lambda m: m.rss_mb, " MiB"), ("redis", lambda m: m.redis_mb, " MiB"),
    ):
        parts.append(f"{label} {avg(first, fn):.1f}{unit} -> {avg(last, fn):.1f}{unit}")
    return f"drift (first {span} vs last {span} minutes): " + ", ".join(parts)


def run(args, settings: Settings) -> int:
    from streams.commands.run_namespace import delete_run_namespace
    from streams.dev.llm_process import LLMServerProcess
    from streams.topics import create_topics

    run_id = uuid.uuid4().hex[:8]
    with LLMServerProcess(args.llm_latency_ms) as llm:
        soak_settings = settings.derive(
            topic_prefix=f"soak-{run_id}.", consumer_group=f"soak-{run_id}", llm_base_url=llm.base_url,
            llm_api_key=SecretStr("soak"), rate_limit_per_minute=1e9, rate_limit_burst=1_000_000,
        )
        create_topics(soak_settings)
        soak = Soak(soak_settings, args, llm)
        soak.worker.start()
        try:
            soak.worker.wait_started(120)
            print(f"soak {run_id}: {args.minutes:g} min at {args.rate:g} turns/s over {args.sessions} sessions, "
                  f"LLM {args.llm_latency_ms:.0f} ms, faults every {args.fault_every:g} min: "
                  f"{', '.join(soak.faults) or 'none'}", flush=True)
            minutes, total, lost, doubled, order = asyncio.run(soak.drive())
        finally:
            soak.worker.terminate(60)
            if not args.keep_topics:
                delete_run_namespace(soak_settings, print)
    print(f"turns {total}  lost {lost}  doubled {doubled}  sessions out of order {order}  faults {len(soak.fault_log)}")
    print(drift(minutes))
    return 0 if lost == 0 and doubled == 0 else 1
