"""An asyncio face on confluent-kafka's producer.

Every record a stage, the gateway or a tool writes goes through here: acks=all and idempotence, so a
broker restart neither loses nor duplicates what was acknowledged, and ``send`` returns only once
Kafka has the record. That is what lets a stage ack its input after its output is safe.
librdkafka does the batching; one poll thread turns delivery reports into asyncio results. Its
configuration comes from ``streams.runtime.clients`` (the one place that configures Kafka clients).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Sequence

from confluent_kafka import KafkaError, KafkaException, Producer

from streams.runtime.clients import PIPELINE_MAX_REQUEST, producer_config

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes | None]]

__all__ = ["AsyncProducer", "ProduceError", "PIPELINE_MAX_REQUEST", "producer_config"]


class ProduceError(RuntimeError):
    """Kafka refused or could not take a record within its delivery timeout."""

    transient = True  # streams.errors.is_transient: the broker may be back on the next attempt


class AsyncProducer:
    """Produce and await delivery without blocking the event loop."""

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self._producer = Producer(producer_config(bootstrap, **overrides))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-producer-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> tuple[int, int]:
        """Produce one record and wait until Kafka acknowledged it; returns (partition, offset)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int]] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                result: Any = ProduceError(f"{topic}: {err.str()}")
            else:
                result = (msg.partition(), msg.offset())
            loop.call_soon_threadsafe(_resolve, future, result)

        kwargs: dict[str, Any] = {"value": value, "key": key, "headers": list(headers or []), "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:
                await asyncio.sleep(0.01)  # local queue full: let librdkafka drain
            except KafkaException as exc:
                raise ProduceError(f"{topic}: {exc}") from exc
        return await future

    async def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for everything queued; returns how many records are still undelivered."""
        return await asyncio.to_thread(self._producer.flush, timeout_s)

    async def close(self, timeout_s: float = 30.0) -> None:
        remaining = await self.flush(timeout_s)
        if remaining:
            log.warning("%d records were not delivered before close", remaining)
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 5)


def _resolve(future: asyncio.Future, result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
