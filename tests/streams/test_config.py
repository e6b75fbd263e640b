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
