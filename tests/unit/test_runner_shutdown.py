"""The consumer's shutdown order, with in-memory stand-ins: side tasks are cancelled
first, workers finish the record in hand, and only then are their offsets committed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from tests.unit.test_partition_worker import worker_for
from tokendist.consumer.runner import Runner
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
