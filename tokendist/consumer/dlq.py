"""Parking a record the consumer will never process: the dead-letter topic, and PostgreSQL.

Every parking is recorded in ``dead_letters`` first (once per original position: the DLQ
topic is at-least-once, a replay or a crash before the offset commit copies a record
again), then the record is copied to the DLQ topic with its reason, keeping its bytes, key
and headers. A copy the broker can never take (the original was just under the topic's
limit and the ``dlq.*`` headers push it over, say, or one with neither key nor value,
which aiokafka cannot produce) is kept whole in PostgreSQL instead,
and the DLQ gets a small record that points to it: either way the partition moves on.
Only an outage (broker or database down) makes the caller wait and retry.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from tokendist.consumer.repository import Position, Repository
from tokendist.core import kafka, metrics
from tokendist.core.errors import RecordRejected

log = structlog.get_logger("tokendist.dlq")

MAX_DETAIL = 1000
# Set on a DLQ record whose original bytes are in PostgreSQL (``dead_letters``), found
# there by the ``dlq.original.*`` position; its value is that position as JSON.
STORED_HEADER = "dlq.stored"
STORED_IN = "postgresql"


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


def headers_json(headers: Any) -> str:
    """A record's headers as JSON: ``[[name, base64 value or null], ...]``, in order."""
    return json.dumps(
        [
            [name, None if value is None else base64.b64encode(value).decode()]
            for name, value in (headers or ())
        ]
    )


def headers_from_json(text: str) -> kafka.Headers:
    return [
        (name, b"" if value is None else base64.b64decode(value))
        for name, value in json.loads(text)
    ]


class DeadLetters:
    def __init__(self, producer: AIOKafkaProducer, topic: str, repo: Repository) -> None:
        self.producer = producer
        self.topic = topic
        self.repo = repo

    async def park(self, record: Any, reason: str, detail: str) -> None:
        """Returns only once the parking is durable: recorded in PostgreSQL and copied to
        (or pointed to from) the DLQ topic, acknowledged by all in-sync replicas."""
        detail = detail[:MAX_DETAIL]
        at = Position(record.topic, record.partition, record.offset)
        await self.repo.record_dead_letter(at, reason, detail, len(record.value or b""))
        headers = dlq_headers(record, reason, detail)
        if record.key is None and record.value is None:
            # Kafka takes such a record from other clients; aiokafka refuses to send one.
            await self._keep_in_database(record, at, headers, "neither key nor value")
        else:
            try:
                await kafka.send(
                    self.producer, self.topic, kafka.Message(record.key, record.value, headers)
                )
            except RecordRejected as exc:
                await self._keep_in_database(record, at, headers, str(exc))
        metrics.DEAD_LETTERS.labels(reason=reason).inc()
        log.warning("event_dead_lettered", reason=reason, detail=detail)

    async def _keep_in_database(
        self, record: Any, at: Position, headers: kafka.Headers, why: str
    ) -> None:
        await self.repo.keep_dead_letter(at, record.key, record.value, headers_json(record.headers))
        pointer = [(k, v) for k, v in headers if k.startswith("dlq.")]
        pointer.append((STORED_HEADER, STORED_IN.encode()))
        where = {"stored_in": "postgresql", "table": "dead_letters", **asdict(at)}
        await kafka.send(
            self.producer, self.topic, kafka.Message(None, json.dumps(where).encode(), pointer)
        )
        metrics.DEAD_LETTERS_STORED.inc()
        log.error(
            "dead_letter_kept_in_database",
            value_bytes=len(record.value or b""),
            error=why,
            alert=True,
        )
