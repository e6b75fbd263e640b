"""Turning a record a stage cannot process into a ``chat.deadletter`` record.

Nothing is dropped silently: the original key, value and headers travel whole, with where they were
read and why they failed, so ``chatstream dlq replay`` can put them back after a fix.
"""

from __future__ import annotations

from processors.records import DeadLetter, KafkaHeader

from streams.message import InboundMessage


def dead_letter_for(msg: InboundMessage, stage: str, error: BaseException, message_id: str | None = None) -> DeadLetter:
    replay_count = 0
    for key, value in msg.headers:
        if key == "chatstream-replay-count" and value:
            try:
                replay_count = int(value.decode())
            except ValueError:
                pass
    return DeadLetter(
        key=msg.key,
        value=msg.value,
        headers=[KafkaHeader(key=k, value=v) for k, v in msg.headers],
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        stage=stage,
        error_class=type(error).__name__,
        error_message=str(error)[:2000],
        message_id=message_id,
        replay_count=replay_count,
    )


class RejectedInput(ValueError):
    """A decodable record that breaks a rule and cannot be answered (e.g. unknown channel)."""
