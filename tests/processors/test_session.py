"""SessionStore against a real Redis (127.0.0.1:6379, db 15, a unique key prefix per test)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid

import pytest
import redis.asyncio as aioredis

from processors.backoff import is_transient_redis_error, retry_transient
from processors.records import ChatRequest, ChatResponse, Status, now_ms
from stack.ports import free_port
import processors.session as session_module
from processors.session import SessionStore

pytestmark = pytest.mark.stack


def _test_db_url() -> str:
    """The configured Redis (default 127.0.0.1:6379), database 15, so tests never touch db 0."""
    from urllib.parse import urlsplit, urlunsplit

    from streams.config import Settings

    parts = urlsplit(Settings().redis_connection_url)
    return urlunsplit((parts.scheme, parts.netloc, "/15", parts.query, ""))


REDIS_URL = _test_db_url()


@pytest.fixture
async def redis_client():
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - environment problem, not a test result
        pytest.fail(f"Redis on {REDIS_URL} is not reachable ({exc!r}); start the stack first")
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_client):
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    yield make_store(redis_client, prefix)
    keys = [k async for k in redis_client.scan_iter(match=f"{prefix}*")]
    if keys:
        await redis_client.delete(*keys)


def make_store(client, prefix, **overrides) -> SessionStore:
    options = dict(
        history_turns=4,
        summary_max_chars=200,
        session_ttl_s=600,
        idempotency_ttl_s=3600,
        rate_per_minute=60.0,
        burst=1000,  # the session tests are not about rate limits; those make their own stores
        key_prefix=prefix,
    )
    options.update(overrides)
    return SessionStore(client, **options)


def request(text: str, *, session: str = "s1", mid: str | None = None, user: str = "u1") -> ChatRequest:
    return ChatRequest(
        message_id=mid or uuid.uuid4().hex,
        session_id=session,
        user_id=user,
        channel="web",
        text=text,
        sent_at=now_ms(),
    )


def reply(req: ChatRequest, text: str, status: Status = Status.ANSWERED) -> ChatResponse:
    return ChatResponse.for_request(req, text, status)


async def replied_among(store: SessionStore, message_ids: list[str]) -> set[str]:
    return {mid for mid in message_ids if await store.is_replied(mid)}


async def enrich(store: SessionStore, req: ChatRequest):
    """The turn the enrich stage gets for ``req`` (``admit``, which must admit it)."""
    admission = await store.admit(req)
    assert admission.outcome == "admitted", admission
    return admission.turn


async def test_enrich_returns_history_without_current_turn(store):
    r1 = request("How do I reset my password?")
    t1 = await enrich(store, r1)
    assert t1.history == [] and t1.summary == "" and t1.session_failures == 0
    await store.record_reply(r1, reply(r1, "Use the Forgot password link."))

    r2 = request("And for 2FA?")
    t2 = await enrich(store, r2)
    assert [(h.role, h.text, h.message_id) for h in t2.history] == [
        ("user", "How do I reset my password?", r1.message_id),
        ("assistant", "Use the Forgot password link.", r1.message_id),
    ]
    assert t2.request is r2


async def test_reprocessed_request_is_appended_once(store, redis_client):
    r1 = request("first")
    await enrich(store, r1)
    await store.record_reply(r1, reply(r1, "answer one"))
    r2 = request("second")
    first = await enrich(store, r2)
    again = await enrich(store, r2)  # a crash made the stage see r2 again
    assert [h.text for h in again.history] == [h.text for h in first.history] == ["first", "answer one"]
    turns_key = store._session_keys("s1")[0]
    assert await redis_client.llen(turns_key) == 3

    await store.record_reply(r2, reply(r2, "answer two"))
    await store.record_reply(r2, reply(r2, "answer two"))
    assert await redis_client.llen(turns_key) == 4


async def test_reprocessing_an_older_turn_sees_only_what_came_before_it(store):
    r1, r2 = request("one"), request("two")
    await enrich(store, r1)
    await enrich(store, r2)
    again = await enrich(store, r1)
    assert again.history == []


async def test_late_reply_is_placed_after_its_question(store):
    r1, r2 = request("question one"), request("question two")
    await enrich(store, r1)
    await enrich(store, r2)  # enriched while r1 was still being answered
    await store.record_reply(r1, reply(r1, "answer one"))
    await store.record_reply(r2, reply(r2, "answer two"))
    t3 = await enrich(store, request("question three"))
    assert [h.text for h in t3.history] == ["question one", "answer one", "question two", "answer two"]


async def test_old_turns_roll_into_a_bounded_summary(store, redis_client):
    for i in range(12):
        r = request(f"Question number {i} is here. It has a second sentence that is not kept.")
        await enrich(store, r)
        await store.record_reply(r, reply(r, f"Answer {i}! Details follow that are dropped."))
    turn = await enrich(store, request("latest"))
    assert len(turn.history) == 4
    assert [h.text.split()[0:2] for h in turn.history] == [["Question", "number"], ["Answer", "10!"],
                                                         ["Question", "number"], ["Answer", "11!"]]
    summary = turn.summary
    assert 0 < len(summary.encode()) <= 200
    lines = summary.split("\n")
    # the newest rolled-off messages are kept, the oldest dropped, one first sentence per message
    assert lines[-1] == "assistant: Answer 9!"
    assert lines[-2] == "user: Question number 9 is here."
    assert all("second sentence" not in line and "dropped" not in line for line in lines)
    assert "Question number 0 " not in summary
    assert await redis_client.llen(store._session_keys("s1")[0]) <= 5


async def test_a_burst_of_questions_rolls_off_only_answered_pairs(store, redis_client):
    """Six questions enriched before any answer (history_turns=4): none rolls off unanswered."""
    store = make_store(store.redis, store.prefix, summary_max_chars=1000)
    turns_key = store._session_keys("s1")[0]
    burst = [request(f"Question {i}.") for i in range(6)]
    for r in burst:
        await enrich(store, r)
    assert await redis_client.llen(turns_key) == 6, "unanswered questions stay in the window"
    assert (await enrich(store, request("probe", session="other"))).summary == ""
    for r in burst:
        await store.record_reply(r, reply(r, f"Answer to {r.text}"))
    raw = await redis_client.lrange(turns_key, 0, -1)
    history = [session_module._history_turn(x) for x in raw]
    assert [(h.role, h.text) for h in history] == [
        ("user", "Question 4."), ("assistant", "Answer to Question 4."),
        ("user", "Question 5."), ("assistant", "Answer to Question 5."),
    ]
    summary = (await store.redis.hget(store._session_keys("s1")[1], "summary")).decode()
    assert summary.split("\n") == [
        line for i in range(4) for line in (f"user: Question {i}.", f"assistant: Answer to Question {i}.")
    ]


async def test_a_question_never_answered_does_not_pin_the_window(store, redis_client):
    """A dead-lettered question holds the roll only up to twice the limit, then rolls off."""
    turns_key = store._session_keys("s1")[0]
    lost = request("Never answered.")
    await enrich(store, lost)
    lengths = []
    for i in range(8):
        r = request(f"Question {i}.")
        await enrich(store, r)
        lengths.append(await redis_client.llen(turns_key))
        await store.record_reply(r, reply(r, f"Answer {i}."))
        lengths.append(await redis_client.llen(turns_key))
    assert max(lengths) <= 2 * (store.history_turns + 1)
    texts = [session_module._history_turn(x).text for x in await redis_client.lrange(turns_key, 0, -1)]
    assert "Never answered." not in texts
    assert texts[-4:] == ["Question 6.", "Answer 6.", "Question 7.", "Answer 7."]


async def test_an_answer_whose_question_was_forced_out_goes_first(store, redis_client):
    turns_key = store._session_keys("s1")[0]
    first = request("First question.")
    await enrich(store, first)
    for i in range(12):  # all unanswered: the window is forced to roll the oldest
        await enrich(store, request(f"Question {i}."))
    texts = [session_module._history_turn(x).text for x in await redis_client.lrange(turns_key, 0, -1)]
    assert "First question." not in texts
    await store.record_reply(first, reply(first, "First answer."))
    texts = [session_module._history_turn(x).text for x in await redis_client.lrange(turns_key, 0, -1)]
    assert "First answer." not in texts[1:], "never after younger questions"


async def test_summary_cut_respects_utf8(store):
    s = make_store(store.redis, store.prefix, summary_max_chars=50, history_turns=0)
    for i in range(4):
        r = request("Ünïcödé ✓ " * 20 + f"{i}", session="utf")
        await enrich(s, r)
        await s.record_reply(r, reply(r, "Grüße ✓✓✓ " * 10))
    turn = await enrich(s, request("x", session="utf"))
    assert turn.history == []
    assert 0 < len(turn.summary.encode("utf-8")) <= 50  # decodes: no split character


async def test_failure_streak(store):
    store = make_store(store.redis, store.prefix, history_turns=16)  # the whole conversation stays verbatim
    statuses = [Status.FALLBACK, Status.ESCALATED, Status.RATE_LIMITED, Status.BLOCKED]
    sent = []
    for status in statuses:
        r = request("help")
        sent.append(r)
        await enrich(store, r)
        await store.record_reply(r, reply(r, "sorry", status))
    turn = await enrich(store, request("again"))
    assert turn.session_failures == 3  # RATE_LIMITED does not count
    # ... and is not in the history: the three other replies are, the rate-limited one is not
    replied = [h.message_id for h in turn.history if h.role == "assistant"]
    assert replied == [r.message_id for r in sent if r is not sent[2]], (replied, [r.message_id for r in sent])

    r = request("thanks")
    await enrich(store, r)
    await store.record_reply(r, reply(r, "You are welcome.", Status.ANSWERED))
    assert (await enrich(store, request("next"))).session_failures == 0


async def test_session_ttl_is_refreshed(store, redis_client):
    r = request("hello")
    await enrich(store, r)
    turns_key, _meta_key, ids_key = store._session_keys("s1")  # meta exists once there is a summary
    for key in (turns_key, ids_key):
        ttl = await redis_client.ttl(key)
        assert 590 <= ttl <= 600, key
    await redis_client.expire(store._session_keys("s1")[0], 10)
    await store.record_reply(r, reply(r, "hi"))
    assert await redis_client.ttl(store._session_keys("s1")[0]) > 590


async def test_turns_sharing_a_round_trip_keep_session_order(store):
    reqs = [request(f"m{i}", session=f"s{i % 2}") for i in range(6)]
    batches_before = store._admit_co.batches
    turns = await asyncio.gather(*(enrich(store, r) for r in reqs))
    assert store._admit_co.batches == batches_before + 1
    assert [h.text for h in turns[4].history] == ["m0", "m2"]
    assert [h.text for h in turns[5].history] == ["m1", "m3"]


async def test_token_bucket_per_user(store):
    fast = make_store(store.redis, store.prefix, rate_per_minute=600.0, burst=3)  # 10 tokens/s
    results = [await fast.admit(request(f"a{i}", session="alice", user="alice")) for i in range(4)]
    assert [a.outcome for a in results] == ["admitted"] * 3 + ["rate_limited"]
    retry_after = results[-1].retry_after_s
    assert 0 < retry_after <= 0.1 + 1e-6
    assert (await fast.admit(request("b", session="bob", user="bob"))).outcome == "admitted"  # buckets are per user
    await asyncio.sleep(retry_after + 0.02)
    assert (await fast.admit(request("a4", session="alice", user="alice"))).outcome == "admitted"
    batch = await asyncio.gather(*(fast.admit(request(f"c{i}", session=f"carol{i}", user="carol")) for i in range(5)))
    assert [a.outcome for a in batch] == ["admitted"] * 3 + ["rate_limited"] * 2
    assert batch[4].retry_after_s == pytest.approx(batch[3].retry_after_s, abs=0.01)  # a denial does not spend a token


async def test_reply_markers(store, redis_client):
    assert not await store.is_replied("m-1")
    await store.mark_replied(["m-1", "m-2"])
    assert await store.is_replied("m-1")
    assert await replied_among(store, ["m-0", "m-1", "m-2", "m-3"]) == {"m-1", "m-2"}
    ttl = await redis_client.ttl(store._replied_key("m-2"))
    assert 3590 <= ttl <= 3600


async def test_spans_wrap_round_trips_without_message_text(store, spans, monkeypatch):
    tracer, exporter = spans
    monkeypatch.setattr(session_module, "tracer", tracer)
    secret_text = "my card is 4111 1111 1111 1111"
    r = request(secret_text)
    await enrich(store, r)
    await store.record_reply(r, reply(r, secret_text))
    await store.mark_replied([r.message_id])
    finished = exporter.get_finished_spans()
    names = {s.name for s in finished}
    assert {"redis session.admit", "redis session.append_reply", "redis idempotency.mark"} <= names
    for s in finished:
        if s.name.startswith("redis "):
            assert s.attributes["db.system"] == "redis"
            assert all(secret_text not in str(v) for v in s.attributes.values())


async def test_enrich_waits_for_redis_to_come_back(tmp_path):
    """A Redis outage makes the caller wait with backoff, then the turn goes through."""
    server = shutil.which("redis-server")
    assert server, "redis-server must be installed for the stack tests"
    port = free_port()
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.2)
    s = make_store(client, "outage:")
    r = request("are you there?")
    proc = None

    async def start_redis_later():
        nonlocal proc
        await asyncio.sleep(1.0)
        proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    try:
        starter = asyncio.create_task(start_redis_later())
        turn = await retry_transient(lambda: enrich(s, r), is_transient=is_transient_redis_error,
                                     base_s=0.05, max_s=0.3, deadline_s=20)
        await starter
        assert turn.request.message_id == r.message_id and turn.history == []
        again = await enrich(s, r)  # and the session is really in the new Redis
        assert again.history == []
    finally:
        await client.aclose()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


async def test_concurrent_single_calls_share_a_pipeline(store):
    reqs = [request(f"hello {i}", session=f"c{i}") for i in range(20)]
    turns = await asyncio.gather(*(enrich(store, r) for r in reqs))
    assert [t.request.message_id for t in turns] == [r.message_id for r in reqs]
    assert store._admit_co.batches == 1 and store._admit_co.items == 20
    await asyncio.gather(*(store.mark_replied([r.message_id]) for r in reqs[:10]))
    flags = await asyncio.gather(*(store.is_replied(r.message_id) for r in reqs))
    assert flags == [True] * 10 + [False] * 10


async def test_concurrent_reply_claims_and_marks_share_a_pipeline_and_keep_their_answers(store):
    await store.mark_replied(["done-0", "done-1"])
    other = make_store(store.redis, store.prefix)  # another worker's stage: claims are per owner
    held = await other.claim_reply("held-0", 5000)
    assert held.state == "ok"
    ids = [f"new-{i}" for i in range(16)] + ["done-0", "done-1", "held-0"]
    claims = await asyncio.gather(*(store.claim_reply(mid, 5000) for mid in ids))
    assert store._claim_co.batches == 1 and store._claim_co.items == len(ids)
    assert [c.message_id for c in claims] == ids
    assert [c.state for c in claims] == ["ok"] * 16 + ["replied", "replied", "held"]
    assert all(c.token >= 1 and c.owner == store.owner for c in claims[:16])
    assert 0 < claims[-1].wait_ms <= 5000
    marked = await asyncio.gather(*(store.mark_claimed(c) for c in claims[:16]), other.mark_claimed(held))
    assert marked == [True] * 17 and store._mark_claimed_co.batches == 1
    assert await replied_among(store, ids) == set(ids)
    again, stale = await asyncio.gather(store.claim_reply("new-0", 5000), store.mark_claimed(claims[0]))
    assert again.state == "replied" and stale is False  # the claim is spent and the marker there: fenced


async def test_finish_reply_marks_and_records_like_the_two_calls_in_one_shared_round_trip(store):
    questions = [request(f"question {i}", session=f"f{i}") for i in range(6)]
    for q in questions:
        await enrich(store, q)
    claims = await asyncio.gather(*(store.claim_reply(q.message_id, 5000) for q in questions))
    answers = [reply(q, f"answer {i}", Status.ANSWERED if i % 2 else Status.FALLBACK) for i, q in enumerate(questions)]
    answers[5] = reply(questions[5], "slow down", Status.RATE_LIMITED)  # marked, not part of the conversation
    marked = await asyncio.gather(*(store.finish_reply(c, q, a) for c, q, a in zip(claims, questions, answers)))
    assert marked == [True] * 6 and store._finish_co.batches == 1 and store._finish_co.items == 6
    assert await replied_among(store, [q.message_id for q in questions]) == {q.message_id for q in questions}
    for i, q in enumerate(questions):
        after = await enrich(store, request("next", session=q.session_id))
        expected = [f"question {i}"] + ([] if i == 5 else [f"answer {i}"])
        assert [h.text for h in after.history] == expected
        assert after.session_failures == (1 if i in (0, 2, 4) else 0)
    assert await store.finish_reply(claims[0], questions[0], answers[0]) is False  # spent claim: fenced, as mark_claimed
    again = await enrich(store, request("once more", session=questions[0].session_id))
    assert [h.text for h in again.history].count("answer 0") == 1  # the RECORD script appends once per message_id


async def test_without_coalescing_each_call_is_its_own_round_trip(store):
    plain = make_store(store.redis, store.prefix, coalesce=False)
    turns = await asyncio.gather(*(enrich(plain, request(f"x{i}", session=f"p{i}")) for i in range(3)))
    assert len(turns) == 3 and plain._admit_co.batches == 0


async def test_admit_appends_once_and_loads_the_history(store, redis_client):
    r1 = request("How do I reset my password?")
    first = await store.admit(r1)
    assert first.outcome == "admitted" and first.turn is not None
    assert first.turn.request is r1 and first.turn.history == [] and first.turn.session_failures == 0
    await store.record_reply(r1, reply(r1, "Use the Forgot password link.", Status.FALLBACK))
    r2 = request("And for 2FA?")
    second = await store.admit(r2)
    again = await store.admit(r2)  # a redelivery after a crash: admitted again, appended once
    for a in (second, again):
        assert a.outcome == "admitted"
        assert [(h.role, h.text) for h in a.turn.history] == [
            ("user", "How do I reset my password?"), ("assistant", "Use the Forgot password link.")]
        assert a.turn.session_failures == 1
    assert await redis_client.llen(store._session_keys("s1")[0]) == 3


async def test_admit_drops_a_replied_message_and_writes_nothing(store, redis_client):
    r = request("already answered", user="u-replied")
    await store.mark_replied([r.message_id])
    admission = await store.admit(r)
    assert admission.outcome == "replied" and admission.turn is None
    assert not await redis_client.exists(*store._session_keys(r.session_id)), "not appended"
    assert not await redis_client.exists(store._bucket_key("u-replied")), "no rate token spent"


async def test_admit_rate_limited_message_is_not_appended_and_comes_with_retry_after(store, redis_client):
    fast = make_store(store.redis, store.prefix, rate_per_minute=600.0, burst=2)  # 10 tokens/s
    reqs = [request(f"q{i}", session="rl") for i in range(3)]
    outcomes = [await fast.admit(r) for r in reqs]
    assert [a.outcome for a in outcomes] == ["admitted", "admitted", "rate_limited"]
    limited = outcomes[2]
    assert limited.turn is None and 0 < limited.retry_after_s <= 0.1 + 1e-6
    turns_key, _meta, ids_key = fast._session_keys("rl")
    assert [session_module._history_turn(x).text for x in await redis_client.lrange(turns_key, 0, -1)] == ["q0", "q1"]
    assert not await redis_client.sismember(ids_key, f"u:{reqs[2].message_id}")
    await asyncio.sleep(limited.retry_after_s + 0.02)
    later = await fast.admit(reqs[2])  # the user sends it again once a token is back
    assert later.outcome == "admitted" and [h.text for h in later.turn.history] == ["q0", "q1"]


async def test_admit_charges_a_message_one_token_however_often_it_is_redelivered(store):
    one = make_store(store.redis, store.prefix, rate_per_minute=1.0, burst=1)
    r = request("once", session="tok")
    assert [(await one.admit(r)).outcome for _ in range(3)] == ["admitted"] * 3
    denied = await one.admit(request("another", session="tok"))
    assert denied.outcome == "rate_limited" and 50 < denied.retry_after_s <= 60


async def test_admit_is_one_shared_round_trip_with_one_span_each(store, spans, monkeypatch):
    tracer, exporter = spans
    monkeypatch.setattr(session_module, "tracer", tracer)
    fast = make_store(store.redis, store.prefix, rate_per_minute=60.0, burst=1)
    replied = request("seen", session="c-replied")
    await fast.mark_replied([replied.message_id])
    await fast.admit(request("spends the only token", session="c-limited", user="busy"))
    exporter.clear()
    secret = "my card is 4111 1111 1111 1111"
    reqs = [request(f"{secret} {i}", session=f"c{i}", user=f"user{i}") for i in range(16)]
    limited = request("too fast", session="c-limited", user="busy")
    batches_before = fast._admit_co.batches
    admissions = await asyncio.gather(*(fast.admit(r) for r in [*reqs, replied, limited]))
    assert fast._admit_co.batches == batches_before + 1, "one pipeline for every turn in flight"
    assert [a.outcome for a in admissions] == ["admitted"] * 16 + ["replied", "rate_limited"]
    assert [a.turn.request.message_id for a in admissions[:16]] == [r.message_id for r in reqs]
    finished = exporter.get_finished_spans()
    assert [s.name for s in finished] == ["redis session.admit"] * 18
    for s in finished:
        assert s.attributes["db.system"] == "redis" and s.attributes["chatstream.batch_size"] == 18
        assert all(secret not in str(v) for v in s.attributes.values())
    assert sorted(s.attributes["chatstream.admission"] for s in finished) == sorted(a.outcome for a in admissions)


async def test_admit_is_reloaded_and_idempotent_after_a_redis_restart(store, redis_client):
    r1 = request("before the restart")
    await store.admit(r1)
    r2 = request("after the restart")
    await redis_client.script_flush()  # what a restarted Redis looks like to the client
    a2 = await store.admit(r2)
    await redis_client.script_flush()
    again = await store.admit(r2)
    assert a2.outcome == again.outcome == "admitted"
    assert [h.text for h in a2.turn.history] == [h.text for h in again.turn.history] == ["before the restart"]
    assert await redis_client.llen(store._session_keys("s1")[0]) == 2


async def test_a_throw_away_namespace_is_deleted_key_by_key_and_nothing_else(redis_client):
    """A bench run's or a replay's keys go with it; another namespace's (even one its prefix matches as a
    glob pattern) and the live namespace's stay, and the live namespace itself is refused."""
    from processors.session import delete_namespace_keys, redis_key_prefix

    run = uuid.uuid4().hex[:8]
    doomed, glob_like, other = f"bench-{run}[x]*.", f"bench-{run}x-anything.", f"bench-{run}y."
    keys = {prefix: [f"{redis_key_prefix(prefix)}{name}" for name in ("replied:m1", "claimseq:m1", "s:{web:s1}:h")]
            for prefix in (doomed, glob_like, other)}
    try:
        for names in keys.values():
            for name in names:
                await redis_client.set(name, "1", ex=600)
        for i in range(1200):  # more than one SCAN page and one UNLINK chunk
            await redis_client.set(f"{redis_key_prefix(doomed)}bulk:{i}", "1", ex=600)
        assert await delete_namespace_keys(redis_client, doomed, chunk=500) == 1203
        assert not await redis_client.exists(*keys[doomed])
        assert await redis_client.exists(*keys[glob_like], *keys[other]) == 6
        with pytest.raises(ValueError, match="live namespace"):
            await delete_namespace_keys(redis_client, "")
    finally:
        await redis_client.delete(*keys[glob_like], *keys[other])
