"""The one settings object: env names, the OpenAI key fallback, masking, derived namespaces."""

from __future__ import annotations

from streams.config import TOPIC_NAMES, Settings


def test_env_prefix_and_openai_key_fallback(monkeypatch) -> None:
    monkeypatch.setenv("CHATSTREAM_KAFKA_BOOTSTRAP", "broker:1234")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env")
    settings = Settings()
    assert settings.kafka_bootstrap == "broker:1234"
    assert settings.llm_api_key is not None and settings.llm_api_key.get_secret_value() == "sk-from-openai-env"
    monkeypatch.setenv("CHATSTREAM_LLM_API_KEY", "sk-chatstream")
    assert Settings().llm_api_key.get_secret_value() == "sk-chatstream"


def test_masked_never_shows_secrets(monkeypatch) -> None:
    monkeypatch.setenv("CHATSTREAM_LLM_API_KEY", "sk-very-secret")
    monkeypatch.setenv("CHATSTREAM_SLACK_SIGNING_SECRET", "slack-secret")
    monkeypatch.setenv("CHATSTREAM_GATEWAY_API_KEYS", '{"key-123": "acme"}')
    text = str(Settings().masked())
    assert "sk-very-secret" not in text and "slack-secret" not in text and "key-123" not in text
    assert "acme" in text


def test_derive_gives_a_namespace_with_its_own_topics() -> None:
    base = Settings()
    replay = base.derive(topic_prefix="replay-7.")
    assert replay.topics.inbound == "replay-7.chat.inbound"
    assert base.topics.inbound == "chat.inbound"
    assert len(set(replay.topics.all())) == len(TOPIC_NAMES)


def test_stack_secrets_come_from_the_state_folder_unless_set(tmp_path):
    """A stack started before the lockdown has no secrets folder: clients stay anonymous."""
    from pydantic import SecretStr

    settings = Settings(home=tmp_path, redis_url="redis://127.0.0.1:6379/0", redis_password=None, weaviate_api_key=None)
    assert settings.stack_secret("weaviate_api_key") is None
    assert settings.redis_connection_url == "redis://127.0.0.1:6379/0"

    settings.secret_path("redis_password").parent.mkdir()
    settings.secret_path("redis_password").write_text("p@ss/word\n")
    settings.secret_path("weaviate_api_key").write_text("generated\n")
    assert settings.redis_connection_url == "redis://:p%40ss%2Fword@127.0.0.1:6379/0"
    assert settings.stack_secret("weaviate_api_key") == "generated"

    explicit = settings.derive(weaviate_api_key=SecretStr("mine"), redis_url="redis://:given@127.0.0.1:6379/0")
    assert explicit.stack_secret("weaviate_api_key") == "mine"
    assert explicit.redis_connection_url == "redis://:given@127.0.0.1:6379/0"  # a URL's own password wins


def test_every_setting_is_declared_in_exactly_one_section() -> None:
    """Sections organise the one Settings object; no field is lost or declared twice on the way."""
    from streams.config import SECTIONS

    declared = [name for section in SECTIONS for name in section.model_fields]
    assert len(declared) == len(set(declared)), "a field is declared in two sections"
    assert set(declared) == set(Settings.model_fields)


def test_config_prints_every_setting_under_its_section(capsys) -> None:
    from argparse import Namespace

    from streams.commands.config_cmd import run
    from streams.config import SECTIONS

    run(Namespace(json=False), Settings())
    out = capsys.readouterr().out
    assert out.count("\n# ") + out.startswith("# ") == len(SECTIONS)
    for name in Settings.model_fields:
        assert f"CHATSTREAM_{name.upper()} " in out


def test_group_consumers_wait_at_the_broker_as_configured(monkeypatch) -> None:
    """A partition assigned or resumed during a fetch's wait joins the next fetch: the wait is short by default."""
    from streams.runtime.clients import consumer_config

    assert consumer_config(Settings(), "g")["fetch.wait.max.ms"] == 100
    monkeypatch.setenv("CHATSTREAM_KAFKA_FETCH_WAIT_MS", "500")
    assert consumer_config(Settings(), "g")["fetch.wait.max.ms"] == 500
    assert consumer_config(Settings(), "g", **{"fetch.wait.max.ms": 10})["fetch.wait.max.ms"] == 10
