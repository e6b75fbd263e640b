"""GenerateStage without Kafka: provisional pieces go to chat.deltas only for channels that show them."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.trace import INVALID_SPAN

from processors.records import ChatDelta, ChatRequest, ChatTurn, Passage
from streams.codec import SingleObjectCodec
from streams.config import Settings
from streams.stages.generate import GenerateStage

codec = SingleObjectCodec()
PASSAGE = Passage("export", "export#0", "Export your data", "kb/export.md",
                  "Open Settings, then Data, and choose Export. The archive arrives by e-mail within an hour.", 0.9, 0.9)


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str]] = []

    async def send(self, topic, value, *, key=None, headers=None):
        self.sent.append((topic, value, key))
        await asyncio.sleep(0)
        return (0, len(self.sent))


async def generate_on(channel: str, settings: Settings) -> tuple[list[ChatDelta], ChatTurn]:
    stage = GenerateStage(settings)
    await stage.start(codec)  # no LLM configured: the extractive generator, which streams its answer as one piece
    producer = Producer()
    stage.attach_producer(producer, codec)
    try:
        request = ChatRequest("m-1", f"{channel}:s1", "u", channel, "How do I export my data?", 0, {})
        (out,) = await stage.process(ChatTurn(request=request, passages=[PASSAGE]), None, INVALID_SPAN)  # type: ignore[arg-type]
    finally:
        await stage.stop()
    assert all(topic == settings.topics.deltas for topic, _, _ in producer.sent)
    return [codec.decode(value, ChatDelta) for _, value, _ in producer.sent], out.record


@pytest.fixture
def settings() -> Settings:
    found = Settings(llm_base_url="", llm_api_key=None)
    assert found.llm_stream_channels == ["web", "slack", "teams"]
    return found


@pytest.mark.parametrize("channel", ["web", "slack", "teams"])
async def test_channels_that_show_pieces_get_them(channel, settings) -> None:
    deltas, turn = await generate_on(channel, settings)
    assert deltas and deltas[-1].final and all(d.channel == channel for d in deltas)
    assert "".join(d.text for d in deltas) == turn.answer and turn.answer


@pytest.mark.parametrize("channel", ["whatsapp", "cli", "bench"])
async def test_channels_that_cannot_show_pieces_get_none_and_the_same_answer(channel, settings) -> None:
    deltas, turn = await generate_on(channel, settings)
    assert deltas == []
    _, shown = await generate_on("web", settings)
    assert turn.answer == shown.answer and turn.provider == shown.provider


async def test_the_channel_list_is_a_setting() -> None:
    only_bench = Settings(llm_base_url="", llm_api_key=None, llm_stream_channels=["bench"])
    deltas, _ = await generate_on("bench", only_bench)
    assert deltas and deltas[-1].final
    web, _ = await generate_on("web", only_bench)
    assert web == []
