"""Kafka-side faults: records delivered twice, and a group rewound to the beginning."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tokendist.core import kafka
from tokendist.core.errors import BrokerUnavailable
from tokendist.core.settings import Settings

READ_LIMIT = 500


async def read_some(settings: Settings, timeout: float = 10.0) -> list[Any]:
    """Records already on the topic, read without a group (nothing committed)."""
    consumer = AIOKafkaConsumer(
        **kafka.connection(settings),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tps = await kafka.partitions(consumer, settings.topic)
        if not tps:
            return []
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        want = sum(ends.values())
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < min(want, READ_LIMIT) and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def reproduce(settings: Settings, rng: random.Random) -> int:
    """Send copies of a few records already on the topic, bytes, key and headers intact:
    what an at-least-once producer retry or a mirroring tool does. Returns copies sent."""
    records = await read_some(settings)
    if not records:
        return 0
    chosen = rng.sample(records, k=min(len(records), rng.randint(1, 6)))
    producer = AIOKafkaProducer(**kafka.connection(settings), acks="all")
    await producer.start()
    sent = 0
    try:
        for record in chosen:
            for _ in range(rng.randint(1, 3)):
                await producer.send_and_wait(
                    settings.topic,
                    value=record.value,
                    key=record.key,
                    headers=list(record.headers or ()),
                )
                sent += 1
    finally:
        await producer.stop()
    return sent


async def rewind_group(settings: Settings, timeout: float = 30.0) -> None:
    """Commit the group's offsets back to the earliest. Only an empty group accepts a
    commit from outside; a member killed moments ago still counts until its session
    expires, so keep trying for a while."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await _commit_earliest(settings)
            return
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def _commit_earliest(settings: Settings) -> None:
    async with kafka.Reader(settings, group=settings.consumer_group) as reader:
        tps = [TopicPartition(settings.topic, p) for p in range(settings.topic_partitions)]
        beginnings = await reader.beginning_offsets(tps)
        reader.assign(tps)
        await reader.commit(beginnings)
