"""The labelled set through the real pipeline: the answerability goal, and a worse retriever scoring worse.

Each configuration is a real replay (``chatstream replay --labels``): its own namespace and worker,
the sample help center in Weaviate, then ``chatstream eval`` figures from the namespace's topics.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from streams.config import Settings
from streams.evaluation.calibrate import calibrate, fitted_threshold, rates, table
from streams.evaluation.compare import compare
from streams.evaluation.split import HELD_OUT
from streams.evaluation.run import load_run
from streams.replay.source import LABELS, load_labels
from tests.streams.replay.conftest import chatstream

pytestmark = pytest.mark.stack

CONFIGS = Path(__file__).resolve().parents[3] / "streams" / "demo" / "replay"
NO_LLM = {"CHATSTREAM_LLM_BASE_URL": "", "CHATSTREAM_LLM_API_KEY": "", "OPENAI_API_KEY": ""}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("replays")


def _replay(home: Path, tag: str, *extra: str) -> tuple[str, dict]:
    name = f"labels-{tag}-{uuid.uuid4().hex[:6]}"
    out = chatstream("replay", "--name", name, "--labels", *extra, home=home, env=NO_LLM, timeout=900)
    assert "turns answered" in out.stdout, out.stdout + out.stderr
    summary = json.loads(chatstream("eval", name, "--json", home=home, env=NO_LLM).stdout)
    return name, summary


@pytest.fixture(scope="module")
def default_run(knowledge_base, home):
    return _replay(home, "default")


@pytest.fixture(scope="module")
def llm_run(knowledge_base, home):
    return _replay(home, "llm", "--scripted-llm-ms", "0")


@pytest.fixture(scope="module")
def worse_run(knowledge_base, home):
    return _replay(home, "worse", "--config", str(CONFIGS / "worse.toml"))


# Floors a little under what this branch measured (issue-10 quality note), so a change that loses
# ground fails; the held-out part is the one the threshold was not fitted on.
FLOORS = {
    "unanswerable_declined_rate": 0.90,
    "answered_right_rate": 0.93,
    "held_out_unanswerable_declined_rate": 0.85,
    "held_out_answered_right_rate": 0.90,
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


async def test_the_threshold_fitted_on_the_fit_part_holds_on_the_held_out_part(knowledge_base):
    """The retriever alone (``chatstream eval calibrate``): the configured threshold is the one the fit
    part chooses, and on the held-out part it still declines and keeps at the floors."""
    settings = Settings()
    points = await calibrate(settings, load_labels(LABELS))
    assert abs(fitted_threshold(points) - settings.answerability_min_relevance) <= 0.04, table(points, settings.answerability_min_relevance)
    declined, kept = rates([p for p in points if p.part == HELD_OUT], settings.answerability_min_relevance)
    assert declined >= FLOORS["held_out_unanswerable_declined_rate"] and kept >= 0.90, table(points, settings.answerability_min_relevance)
