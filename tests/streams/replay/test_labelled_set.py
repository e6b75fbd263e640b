"""The labelled set through the real pipeline: the answerability goal, and a worse retriever scoring worse.

Each configuration is a real replay (``chatstream replay --labels``): its own namespace and worker,
the sample help center in Weaviate, then ``chatstream eval`` figures from the namespace's topics.

The help center is ingested into a tenant of this module's own, dropped at the end: the figures must
not depend on what other tests did to the shared default tenant (its vector index was once found
degraded there: "how to enable 2fa" no longer found the 2FA article by vector, while a fresh tenant
with the same vectors did, and answered-right fell to 51 %).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.config import Settings
from streams.evaluation.calibrate import calibrate, fitted_threshold, rates, table
from streams.evaluation.compare import compare
from streams.evaluation.split import HELD_OUT
from streams.evaluation.run import load_run
from streams.replay.source import LABELS, load_labels
from streams.dev.worker_process import settings_env
from tests.streams.replay.conftest import KB, chatstream

pytestmark = pytest.mark.stack

CONFIGS = Path(__file__).resolve().parents[3] / "streams" / "demo" / "replay"
NO_LLM = {"CHATSTREAM_LLM_BASE_URL": "", "CHATSTREAM_LLM_API_KEY": "", "OPENAI_API_KEY": ""}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("replays")


@pytest.fixture(scope="module")
def tenant() -> Iterator[str]:
    """The sample help center in a fresh tenant (see the module doc), dropped afterwards."""
    from processors.vectorstore import build_store

    name = f"labels-{uuid.uuid4().hex[:8]}"
    settings = Settings()
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "ingest", str(KB), "--tenant", name, "--quiet"],
        env=settings_env(settings), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    yield name

    async def drop() -> None:
        store = build_store(settings)
        try:
            await store.drop_tenant(name)
        finally:
            await store.close()

    asyncio.run(drop())


def _replay(home: Path, tenant: str, tag: str, *extra: str) -> tuple[str, dict]:
    name = f"labels-{tag}-{uuid.uuid4().hex[:6]}"
    out = chatstream("replay", "--name", name, "--labels", "--tenant", tenant, *extra, home=home, env=NO_LLM, timeout=900)
    assert "turns answered" in out.stdout, out.stdout + out.stderr
    summary = json.loads(chatstream("eval", name, "--json", home=home, env=NO_LLM).stdout)
    return name, summary


@pytest.fixture(scope="module")
def default_run(tenant, home):
    return _replay(home, tenant, "default")


@pytest.fixture(scope="module")
def llm_run(tenant, home):
    return _replay(home, tenant, "llm", "--scripted-llm-ms", "0")


@pytest.fixture(scope="module")
def worse_run(tenant, home):
    return _replay(home, tenant, "worse", "--config", str(CONFIGS / "worse.toml"))


# Floors a little under what this branch measured (issue-10 quality note), so a change that loses
# ground fails; the held-out part is the one the threshold was not fitted on.
# Reached (150 labels, extractive and scripted LLM alike): answered right 109/114 = 95.6 %, declined
# 34/36 = 94.4 %; held-out part 40/41 = 97.6 % and 13/13. Each floor allows about one more miss.
FLOORS = {
    "unanswerable_declined_rate": 0.90,
    "answered_right_rate": 0.94,
    "held_out_unanswerable_declined_rate": 0.90,
    "held_out_answered_right_rate": 0.95,
}


def _goal(summary: dict) -> None:
    """Issue 10's goal is >= 90 % of unanswerable declined with >= 95 % of answerable answered with the
    right article cited, with extractive generation and with an LLM. The figures reached on this branch
    are in the issue-10 quality note; the floors above sit just under them."""
    labels = load_labels(LABELS)
    assert summary["labelled_turns"] == len(labels)
    low = {k: summary[k] for k, floor in FLOORS.items() if not summary[k] >= floor}
    assert not low, f"below the floor: {low}; misses: {summary['answerable_missed']} / {summary['unanswerable_answered']}"


def test_answerability_goal_with_extractive_generation(default_run):
    _goal(default_run[1])


def test_answerability_goal_with_an_llm(llm_run):
    _goal(llm_run[1])


def test_a_worse_retriever_scores_measurably_worse(default_run, worse_run, home):
    settings = Settings(home=home)
    labels = load_labels(LABELS)
    good, bad = load_run(settings, default_run[0]).records, load_run(settings, worse_run[0]).records
    result = compare(good, bad, settings.model_prices, labels, name_a="default", name_b="worse")
    verdicts = {m.name: m for m in result.metrics}
    assert verdicts["hit_at_k"].verdict == "B worse", verdicts["hit_at_k"]
    assert verdicts["context_recall"].verdict == "B worse", verdicts["context_recall"]
    assert worse_run[1]["mrr"] < default_run[1]["mrr"]


async def test_the_threshold_fitted_on_the_fit_part_holds_on_the_held_out_part(tenant):
    """The retriever alone (``chatstream eval calibrate``): the configured threshold is the one the fit
    part chooses, and on the held-out part it still declines and keeps at the floors."""
    settings = Settings().derive(tenant=tenant)
    points = await calibrate(settings, load_labels(LABELS))
    assert abs(fitted_threshold(points) - settings.answerability_min_relevance) <= 0.04, table(points, settings.answerability_min_relevance)
    declined, kept = rates([p for p in points if p.part == HELD_OUT], settings.answerability_min_relevance)
    # reached at 0.82: held-out 13/13 declined, 41/42 kept (a relevant article among the passages or not)
    assert declined >= FLOORS["held_out_unanswerable_declined_rate"] and kept >= 0.95, table(points, settings.answerability_min_relevance)
