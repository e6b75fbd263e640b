"""``chatstream bench --kb``: the questions it asks and how it reads CPU, without services."""

from __future__ import annotations

import collections
import os

from processors.ingest import Document
from streams.commands.bench_kb import known_item_questions, process_cpu_s, server_env, zipf_traffic


def test_known_item_questions_come_from_inside_the_document_without_its_title():
    docs = [
        Document(f"d{i}", f"Topic{i} Thing", f"d{i}.md", "", f"Topic{i} Thing is a thing. "
                 f"It was first described by explorer number {i} in the northern valleys long ago. Short one.")
        for i in range(30)
    ]
    questions = known_item_questions(docs, 10)
    assert len(questions) == 10 and len({d for _, d in questions}) == 10
    for question, doc_id in questions:
        assert question.startswith("It was first described by explorer number")
        assert f"Topic{doc_id[1:]}" not in question and "Thing" not in question
    assert known_item_questions(docs, 10) == questions  # deterministic


def test_zipf_traffic_repeats_the_head_questions():
    pool = [f"q{i}" for i in range(300)]
    counts = collections.Counter(zipf_traffic(pool, 5000))
    assert counts["q0"] > counts["q1"] > counts["q9"] > 0
    assert counts["q0"] > 5000 * 0.1 and len(counts) > 150  # a heavy head and a long tail


def test_cpu_and_environment_of_a_process_are_read_from_proc():
    before = process_cpu_s(os.getpid())
    sum(i * i for i in range(300_000))
    assert process_cpu_s(os.getpid()) >= before
    os.environ["CS_BENCH_KB_PROBE"] = "42"
    # /proc/<pid>/environ is the environment at exec time: a variable set later is not there
    assert server_env(os.getpid(), "CS_BENCH_KB_PROBE") is None
    assert server_env(os.getpid(), "PATH") is not None
    assert server_env(None, "PATH") is None
