"""The partition worker, with an in-memory process function: order, done offsets,
retries that hold the offset, and a stop that never marks unfinished work done."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from consumer.partition import PartitionWorker, WorkerState
from tokendist.errors import DatabaseUnavailable


def records(*offsets: int) -> list[Any]:
    return [SimpleNamespace(partition=0, offset=o) for o in offsets]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_records_are_processed_in_order_and_done_moves_past_each() -> None:
    seen: list[int] = []

    async def process(record: Any) -> None:
        seen.append(record.offset)

    worker = PartitionWorker(0, process, retry_base_s=0.01, retry_cap_s=0.01)
    worker.feed(records(5, 6, 7))
    await settle()
    assert seen == [5, 6, 7]
    assert worker.done == 8
    await worker.stop(1)
    assert worker.state is WorkerState.STOPPED


async def test_a_transient_failure_retries_the_same_record_and_holds_the_offset() -> None:
    attempts: list[int] = []

    async def process(record: Any) -> None:
        attempts.append(record.offset)
        if len(attempts) < 3:
            raise DatabaseUnavailable("down")

    worker = PartitionWorker(0, process, retry_base_s=0.001, retry_cap_s=0.002)
    worker.feed(records(1, 2))
    await settle()
    assert attempts == [1, 1, 1, 2]
    assert worker.done == 3
    await worker.stop(1)


async def test_an_unexpected_error_is_retried_too_never_skipped() -> None:
    calls = 0

    async def process(record: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("a bug")

    worker = PartitionWorker(0, process, retry_base_s=0.001, retry_cap_s=0.002)
    worker.feed(records(9))
    await settle()
    assert (calls, worker.done) == (2, 10)
    await worker.stop(1)


async def test_stop_finishes_the_record_in_hand_and_drops_the_rest() -> None:
    release = asyncio.Event()
    seen: list[int] = []

    async def process(record: Any) -> None:
        seen.append(record.offset)
        await release.wait()

    worker = PartitionWorker(0, process, retry_base_s=0.01, retry_cap_s=0.01)
    worker.feed(records(1, 2, 3))
    await settle()
    stopping = asyncio.create_task(worker.stop(5))
    await settle()
    release.set()
    await stopping
    assert seen == [1]
    assert worker.done == 2, "the record in hand finished; the queued ones are not done"
    worker.feed(records(4))
    await settle()
    assert seen == [1], "a stopped worker takes nothing new"


async def test_stop_past_the_grace_period_cancels_without_marking_done() -> None:
    async def process(record: Any) -> None:
        await asyncio.sleep(60)

    worker = PartitionWorker(0, process, retry_base_s=0.01, retry_cap_s=0.01)
    worker.feed(records(1))
    await settle()
    await worker.stop(0.05)
    assert worker.done is None
    assert worker.state is WorkerState.STOPPED
