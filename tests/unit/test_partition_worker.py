"""The partition worker, with an in-memory process function: one user's records in
order and never overlapping, other users' records concurrently up to the window, done
offsets that move only past a finished prefix, retries that hold the offset, and a stop
that never marks unfinished work done."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY

from tokendist.consumer.partition import PartitionWorker, WorkerState
from tokendist.core.errors import DatabaseUnavailable


def records(*offsets: int, user: bytes = b"user-1") -> list[Any]:
    return [SimpleNamespace(partition=0, offset=o, key=user) for o in offsets]


async def refuse_to_park(record: Any, reason: str, detail: str) -> None:
    raise AssertionError(f"offset {record.offset} parked: {reason}: {detail}")


def worker_for(
    process: Any,
    *,
    window: int = 8,
    retry_s: float = 0.01,
    park: Any = refuse_to_park,
    park_after: int = 1000,
) -> PartitionWorker:
    return PartitionWorker(
        0,
        process,
        park=park,
        park_after=park_after,
        window=window,
        retry_base_s=retry_s,
        retry_cap_s=retry_s,
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_one_users_records_are_processed_in_order_and_done_moves_past_each() -> None:
    seen: list[int] = []

    async def process(record: Any) -> None:
        seen.append(record.offset)

    worker = worker_for(process)
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

    worker = worker_for(process, retry_s=0.001)
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

    worker = worker_for(process, retry_s=0.001)
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

    worker = worker_for(process, window=1)
    worker.feed(records(1, 2, 3))
    await settle()
    stopping = asyncio.create_task(worker.stop(5))
    await settle()
    release.set()
    await stopping
    assert seen == [1]
    assert worker.done == 2, "the record in hand finished; the queued ones were dropped"
    worker.feed(records(4))
    await settle()
    assert seen == [1], "a stopped worker takes nothing new"


async def test_stop_past_the_grace_period_cancels_without_marking_done() -> None:
    async def process(record: Any) -> None:
        await asyncio.sleep(60)

    worker = worker_for(process)
    worker.feed(records(1))
    await settle()
    await worker.stop(0.05)
    assert worker.done is None
    assert worker.state is WorkerState.STOPPED


async def test_one_users_records_never_overlap_while_other_users_run_beside_them() -> None:
    running: dict[bytes, int] = {}
    overlap: list[bytes] = []
    order: list[tuple[bytes, int]] = []
    peak = 0

    async def process(record: Any) -> None:
        nonlocal peak
        running[record.key] = running.get(record.key, 0) + 1
        if running[record.key] > 1:
            overlap.append(record.key)
        peak = max(peak, sum(running.values()))
        await asyncio.sleep(0.02)
        order.append((record.key, record.offset))
        running[record.key] -= 1

    worker = worker_for(process, window=3)
    mixed = [SimpleNamespace(partition=0, offset=o, key=b"u%d" % (o % 4)) for o in range(12)]
    worker.feed(mixed)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if worker.done == 12:
            break
    assert worker.done == 12
    assert overlap == []
    assert peak == 3, "three users at once: the window, not one record at a time"
    for user in (b"u0", b"u1", b"u2", b"u3"):
        offsets = [o for u, o in order if u == user]
        assert len(offsets) == 3
        assert offsets == sorted(offsets)
    await worker.stop(1)


async def test_done_waits_for_an_earlier_record_still_in_progress() -> None:
    slow_user_may_finish = asyncio.Event()

    async def process(record: Any) -> None:
        if record.key == b"slow":
            await slow_user_may_finish.wait()

    worker = worker_for(process)
    worker.feed(records(10, user=b"slow") + records(11, 12, user=b"fast"))
    await settle()
    assert worker.done is None, "11 and 12 finished, but 10 before them has not"
    slow_user_may_finish.set()
    await settle()
    assert worker.done == 13
    await worker.stop(1)


async def test_a_retrying_record_holds_its_users_next_record_but_not_other_users() -> None:
    seen: list[tuple[bytes, int]] = []
    failures = 0

    async def process(record: Any) -> None:
        nonlocal failures
        if record.offset == 1 and failures < 3:
            failures += 1
            raise DatabaseUnavailable("down")
        seen.append((record.key, record.offset))

    worker = worker_for(process, retry_s=0.03)
    worker.feed(records(1, 2, user=b"a") + records(3, user=b"b"))
    await settle()
    assert seen.index((b"b", 3)) < seen.index((b"a", 1)) < seen.index((b"a", 2))
    assert worker.done == 4
    await worker.stop(1)


async def test_stop_cancels_every_record_in_hand_past_the_grace_period() -> None:
    async def process(record: Any) -> None:
        await asyncio.sleep(60)

    worker = worker_for(process)
    worker.feed(records(1, user=b"a") + records(2, user=b"b"))
    await settle()
    await worker.stop(0.05)
    assert (worker.done, worker.state) == (None, WorkerState.STOPPED)


async def test_stop_finishes_every_record_in_hand_so_nothing_finished_is_left_uncommitted() -> None:
    release = asyncio.Event()
    seen: list[int] = []

    async def process(record: Any) -> None:
        if record.offset == 1:
            await release.wait()
        seen.append(record.offset)

    worker = worker_for(process, window=4)
    worker.feed(records(1, 2, user=b"a") + records(3, user=b"b") + records(4, 5, user=b"c"))
    await settle()
    assert seen == [3, 4, 5]
    assert worker.done is None, "offset 1 is still in progress"
    stopping = asyncio.create_task(worker.stop(5))
    await settle()
    release.set()
    await stopping
    assert seen == [3, 4, 5, 1, 2], "2 was in hand (waiting for 1): it ran; nothing was queued"
    assert worker.done == 6


async def test_a_record_whose_predecessor_never_finished_does_not_run() -> None:
    seen: list[int] = []

    async def process(record: Any) -> None:
        if record.offset == 1:
            raise DatabaseUnavailable("down")
        seen.append(record.offset)

    worker = worker_for(process, window=4, retry_s=0.02)
    worker.feed(records(1, 2, user=b"a"))
    await settle()
    await worker.stop(5)
    assert seen == [], "the user's second payment never overtakes the first"
    assert worker.done is None


async def test_a_record_that_keeps_failing_is_parked_and_its_partition_moves_on() -> None:
    """Issue 12: no single record may stop its partition for good."""
    parked: list[tuple[int, str, str]] = []
    processed: list[int] = []

    async def process(record: Any) -> None:
        if record.offset == 3:
            raise ValueError("a poison record")
        processed.append(record.offset)

    async def park(record: Any, reason: str, detail: str) -> None:
        parked.append((record.offset, reason, detail))

    worker = worker_for(process, retry_s=0.001, park=park, park_after=4)
    worker.feed(records(3, 4, 5))
    await settle()
    assert parked == [(3, "processing_error", "4 attempts: ValueError('a poison record')")]
    assert processed == [4, 5]
    assert worker.done == 6
    assert worker.retrying == {}
    await worker.stop(1)


async def test_an_outage_never_counts_towards_parking() -> None:
    attempts = 0

    async def process(record: Any) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 12:
            raise DatabaseUnavailable("down")

    worker = worker_for(process, retry_s=0.001, park_after=2)  # parking would fail the test
    worker.feed(records(1))
    for _ in range(50):
        await settle()
        if worker.done is not None:
            break
    assert (attempts, worker.done) == (13, 2)
    await worker.stop(1)


async def test_a_record_that_cannot_be_parked_holds_its_partition_loudly() -> None:
    """Parking fails too (e.g. a bug in it): the record waits, counted and reported,
    and goes as soon as parking works."""
    park_calls = 0
    parking_works = asyncio.Event()

    async def process(record: Any) -> None:
        raise KeyError("bug")

    async def park(record: Any, reason: str, detail: str) -> None:
        nonlocal park_calls
        park_calls += 1
        if not parking_works.is_set():
            raise TypeError("parking is broken too")

    before = metric("tokendist_unparkable_records_total")
    worker = worker_for(process, retry_s=0.001, park=park, park_after=2)
    worker.feed(records(7, 8))
    await settle()
    assert worker.done is None
    retry = worker.retrying[7]
    assert retry.attempts >= 3
    assert "parking is broken too" in retry.error
    assert metric("tokendist_unparkable_records_total") - before == park_calls
    parking_works.set()
    await settle()
    assert worker.retrying == {}
    assert worker.done == 9  # 8 failed and was parked too
    await worker.stop(1)


async def test_retrying_shows_attempts_and_the_last_error_while_the_record_waits() -> None:
    failing = True

    async def process(record: Any) -> None:
        if failing:
            raise DatabaseUnavailable("connection refused")

    worker = worker_for(process, retry_s=0.001)
    worker.feed(records(11))
    await settle()
    retry = worker.retrying[11]
    assert retry.attempts > 1
    assert retry.error == "DatabaseUnavailable: connection refused"
    failing = False
    await settle()
    assert (worker.retrying, worker.done) == ({}, 12)
    await worker.stop(1)


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0
