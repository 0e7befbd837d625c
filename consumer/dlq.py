"""The dead-letter topic: a bad message is copied there with its reason, then its offset
may move on. The copy keeps the original bytes, key and headers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from tokendist import kafka, metrics

log = structlog.get_logger("tokendist.dlq")

MAX_DETAIL = 1000


def dlq_headers(record: Any, reason: str, detail: str) -> kafka.Headers:
    added = {
        "dlq.reason": reason,
        "dlq.detail": detail[:MAX_DETAIL],
        "dlq.original.topic": record.topic,
        "dlq.original.partition": str(record.partition),
        "dlq.original.offset": str(record.offset),
        "dlq.original.timestamp": str(record.timestamp),
        "dlq.failed_at": datetime.now(UTC).isoformat(),
    }
    kept = [(k, v) for k, v in (record.headers or ()) if not k.startswith("dlq.")]
    return kept + [(k, v.encode()) for k, v in added.items()]


class DeadLetters:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def park(self, record: Any, reason: str, detail: str) -> None:
        """Returns only once the broker acknowledged the copy (acks=all)."""
        headers = dlq_headers(record, reason, detail)
        await kafka.guarded(
            lambda: self.producer.send_and_wait(
                self.topic, value=record.value, key=record.key, headers=headers
            )
        )
        metrics.DEAD_LETTERS.labels(reason=reason).inc()
        log.warning("event_dead_lettered", reason=reason, detail=detail[:MAX_DETAIL])
