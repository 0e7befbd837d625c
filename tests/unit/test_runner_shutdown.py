"""The consumer's shutdown order, with in-memory stand-ins: side tasks are cancelled
first, workers finish the record in hand, and only then are their offsets committed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from tests.unit.test_partition_worker import worker_for
from tokendist.consumer.runner import Runner
from tokendist.core import metrics
from tokendist.core.settings import Settings

SETTINGS = Settings(
    database_url="postgresql://unused", kafka_bootstrap="unused:9092", shutdown_grace_s=2
)


class RecordingConsumer:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.journal.append(f"commit {sorted((tp.partition, o) for tp, o in offsets.items())}")


async def test_shutdown_cancels_side_tasks_then_drains_workers_then_commits() -> None:
    journal: list[str] = []
    release = asyncio.Event()

    async def process(record: Any) -> None:
        journal.append(f"start {record.offset}")
        await release.wait()
        journal.append(f"finish {record.offset}")

    async def side_task() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            journal.append("side task cancelled")
            raise

    runner = Runner(SETTINGS, asyncio.Event())
    runner.consumer = RecordingConsumer(journal)
    tp = TopicPartition("payments", 0)
    worker = worker_for(process, window=1)
    runner.workers[tp] = worker
    worker.feed([SimpleNamespace(partition=0, offset=o, key=b"user-1") for o in (41, 42)])
    side = asyncio.create_task(side_task())
    await asyncio.sleep(0.05)

    shutdown = asyncio.create_task(runner._shutdown([side]))
    await asyncio.sleep(0.05)
    release.set()
    await shutdown

    assert journal == [
        "start 41",
        "side task cancelled",
        "finish 41",
        "commit [(0, 42)]",
    ]
    assert runner.workers == {}


async def test_a_released_partition_is_no_longer_reported() -> None:
    """A partition given away keeps no lag or retrying age in this process's metrics: a
    stale age would hold the stuck-partition alert on forever."""
    runner = Runner(SETTINGS, asyncio.Event())
    runner.consumer = RecordingConsumer([])
    tp = TopicPartition("payments", 7)
    runner.workers[tp] = worker_for(lambda record: asyncio.sleep(0))
    metrics.LAG.labels(partition="7").set(12)
    metrics.RETRYING.labels(partition="7").set(400)

    await runner.release([tp])

    for name in ("tokendist_consumer_lag", "tokendist_partition_retrying_seconds"):
        assert REGISTRY.get_sample_value(name, {"partition": "7"}) is None
