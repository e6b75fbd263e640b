"""The console's API without services: the operator token guards every /api route; the page is static."""

from __future__ import annotations

from starlette.testclient import TestClient

from streams.config import Settings
from streams.console.app import create_app, operator_token
from streams.console.store import TurnStore
from streams.console.synthetic import fill


def _client(tmp_path) -> TestClient:
    settings = Settings(home=tmp_path, jaeger_query_url="http://127.0.0.1:9")  # nothing listens on port 9
    store = TurnStore(tmp_path / "c.sqlite3")
    fill(store, 500, minutes=5)
    return TestClient(create_app(settings, store, token="op-token", follow=False))


def test_token_generated_once_into_the_state_folder(tmp_path) -> None:
    settings = Settings(home=tmp_path)
    token = operator_token(settings)
    assert len(token) >= 30 and operator_token(settings) == token
    assert (tmp_path / "console-token").stat().st_mode & 0o777 == 0o600


def test_api_refuses_without_the_token_and_serves_the_page(tmp_path) -> None:
    with _client(tmp_path) as client:
        assert client.get("/api/turns").status_code == 401
        assert client.get("/api/turns", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/api/deadletters/replay", json={"refs": ["0:1"]}).status_code == 401
        page = client.get("/")
        assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
        assert client.get("/static/uPlot.iife.min.js").status_code == 200


def test_overview_and_questions_from_the_store(tmp_path) -> None:
    auth = {"Authorization": "Bearer op-token"}
    with _client(tmp_path) as client:
        turns = client.get("/api/turns?limit=20", headers=auth).json()["turns"]
        assert len(turns) == 20 and turns[0]["status"]
        overview = client.get("/api/overview?range=15m", headers=auth).json()
        assert overview["totals"]["turns"] == 500 and sum(overview["turns"]["turns_per_s"]) > 0
        assert set(overview["turns"]["latency"]) >= {"e2e", "overhead", "enrich", "retrieve", "generate", "llm", "validate"}
        questions = client.get("/api/questions?range=15m", headers=auth).json()
        assert questions["failing_questions"][0]["blocked"] > 0
        assert questions["dependencies"] == [] and "Jaeger" in questions["dependencies_error"]
        assert questions["weak_documents"]
        assert client.post("/api/deadletters/replay", json={"refs": []}, headers=auth).status_code == 400
