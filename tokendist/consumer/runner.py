"""``tokendist consume``: a member of the consumer group.

The fetch loop never stops calling ``getmany`` (busy partitions are paused instead), so
slow chain calls can never push the member past ``max_poll_interval_ms`` and out of the
group. Each assigned partition gets a ``PartitionWorker``; offsets are committed per
partition, only up to the last record whose processing finished.

Shutdown order (``_shutdown``), for SIGTERM and for any crashed side task alike:
stop intake (leave the fetch loop) → cancel side tasks → let workers finish the record in
hand up to the grace period (the gatherer still batching them), cancel the rest → commit
finished offsets → stop the gatherer → leave the group (``membership.close``: a static
member too) and close the producer, the settler's batches, the keys' chain clients and
the pool, in reverse order of opening.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from tokendist.consumer import membership, wiring
from tokendist.consumer.dlq import DeadLetters
from tokendist.consumer.partition import PartitionWorker
from tokendist.consumer.repository import Repository, Retrying
from tokendist.core import kafka, metrics
from tokendist.core.errors import TransientError
from tokendist.core.failpoints import Failpoints
from tokendist.core.retry import StoppedWhileWaiting, until_available
from tokendist.core.settings import ConsumerSettings

log = structlog.get_logger("tokendist.consumer")

COMMIT_EVERY_S = 0.5
# aiokafka's commit waits for a group coordinator forever; during a broker outage that
# would hang the drain (and SIGTERM with it). An abandoned commit loses nothing: the next
# owner resumes from the previous one, and resuming is idempotent.
COMMIT_TIMEOUT_S = 10.0
FETCH_TIMEOUT_MS = 200
FETCH_MAX_RECORDS = 500
# How a member reads; the benchmark's raw-consume baseline reads the same way.
FETCH_OPTIONS: dict[str, Any] = {
    "enable_auto_commit": False,
    "isolation_level": "read_committed",
    "auto_offset_reset": "earliest",
    "max_partition_fetch_bytes": 1024 * 1024,
}


class RunnerState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class Runner:
    def __init__(self, settings: ConsumerSettings, stop: asyncio.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.state = RunnerState.NEW
        self.workers: dict[TopicPartition, PartitionWorker] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.revocations = 0  # how often the group took partitions away from us
        self.consumer: AIOKafkaConsumer | None = None
        self._process: Callable[[Any], Awaitable[object]] | None = None
        self._dead_letters: DeadLetters | None = None
        self._repo: Repository | None = None
        # What status was last told, by partition; None: unknown, clear it.
        self._reported: dict[int, Retrying | None] = {}

    async def run(self) -> None:
        if self.state is not RunnerState.NEW:
            raise RuntimeError(f"runner already {self.state.value}")
        self.state = RunnerState.RUNNING
        try:
            await self._run()
        except StoppedWhileWaiting as exc:
            log.info("stopped_while_starting", step=str(exc))
        self.state = RunnerState.STOPPED
        log.info("consumer_stopped")

    async def _run(self) -> None:
        async with AsyncExitStack() as resources:
            s, stop = self.settings, self.stop
            member = await wiring.build(s, stop, resources)
            self._repo = member.repo
            self._dead_letters = member.dead_letters
            self._process = member.processor.handle
            self.consumer = consumer = await until_available(
                "consumer", lambda: kafka.start(self._make_consumer()), s, stop
            )
            resources.push_async_callback(membership.close, consumer, s)
            side_tasks = [
                *self._metrics_server(),
                asyncio.create_task(self._commit_loop(), name="committer"),
                asyncio.create_task(member.resubmitter.run(), name="resubmitter"),
                asyncio.create_task(member.gauges.run(), name="gauges"),
                asyncio.create_task(member.releaser.run(), name="releaser"),
            ]
            # Outlives the workers' drain: the payments in hand still get batched.
            gatherer = asyncio.create_task(member.gatherer.run(), name="gatherer")
            try:
                await self._fetch_loop([*side_tasks, gatherer])
            finally:
                await self._shutdown(side_tasks)
                gatherer.cancel()
                await asyncio.gather(gatherer, return_exceptions=True)

    def _metrics_server(self) -> list[asyncio.Task[None]]:
        if self.settings.metrics_port is None:
            return []
        ready = lambda: self.state is RunnerState.RUNNING  # noqa: E731 -- one expression
        return [
            asyncio.create_task(metrics.serve(self.settings.metrics_port, ready), name="metrics")
        ]

    def _make_consumer(self) -> AIOKafkaConsumer:
        consumer = kafka.consumer(
            self.settings,
            **membership.group_options(self.settings),
            **FETCH_OPTIONS,
        )
        consumer.subscribe([self.settings.topic], listener=_Rebalance(self))
        return consumer

    async def _fetch_loop(self, side_tasks: list[asyncio.Task[None]]) -> None:
        assert self.consumer is not None
        consumer = self.consumer
        while not self.stop.is_set():
            crashed = [t for t in side_tasks if t.done()]
            if crashed:
                log.error("side_task_crashed", task=crashed[0].get_name(), alert=True)
                crashed[0].result()  # re-raise: a dead committer or resubmitter stops us loudly
            try:
                batches = await kafka.guarded(
                    lambda: consumer.getmany(
                        timeout_ms=FETCH_TIMEOUT_MS, max_records=FETCH_MAX_RECORDS
                    )
                )
            except TransientError as exc:
                log.warning("fetch_failed", error=str(exc))
                await asyncio.sleep(self.settings.retry_base_s)
                continue
            assignment = consumer.assignment()
            for tp, records in batches.items():
                if tp in assignment:
                    self._worker(tp).feed(records)
            self._apply_backpressure(consumer)

    def _worker(self, tp: TopicPartition) -> PartitionWorker:
        worker = self.workers.get(tp)
        if worker is None:
            assert self._process is not None
            assert self._dead_letters is not None
            worker = PartitionWorker(
                tp.partition,
                self._process,
                park=self._dead_letters.park,
                park_after=self.settings.park_after_errors,
                window=self.settings.partition_window,
                retry_base_s=self.settings.retry_base_s,
                retry_cap_s=self.settings.retry_cap_s,
                failpoints=Failpoints(self.settings.failpoints),
            )
            self.workers[tp] = worker
            self._reported[tp.partition] = None
        return worker

    def _apply_backpressure(self, consumer: AIOKafkaConsumer) -> None:
        paused = consumer.paused()
        for tp, worker in self.workers.items():
            if worker.backlog >= self.settings.max_partition_buffer and tp not in paused:
                consumer.pause(tp)
            elif worker.backlog < self.settings.max_partition_buffer // 2 and tp in paused:
                consumer.resume(tp)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_EVERY_S)
            await self.commit(list(self.workers))
            self._observe_lag()
            await self._report_retrying()

    def _observe_lag(self) -> None:
        assert self.consumer is not None
        for tp, worker in self.workers.items():
            end = self.consumer.highwater(tp)
            if end is not None and worker.done is not None:
                metrics.LAG.labels(partition=str(tp.partition)).set(end - worker.done)

    async def _report_retrying(self) -> None:
        """Tell ``tokendist status`` (through PostgreSQL) which owned partitions wait on a
        record and why; only changes are written. A partition just assigned is cleared
        once (its previous owner may have died with a row left behind). A failed write is
        tried again next tick: when the database is what is down, status cannot read it."""
        assert self._repo is not None
        now = datetime.now(UTC)
        owned = {tp.partition: worker for tp, worker in self.workers.items()}
        current: dict[int, Retrying] = {}
        for partition, worker in owned.items():
            held = 0.0
            if worker.retrying:
                offset = min(worker.retrying)
                retry = worker.retrying[offset]
                current[partition] = Retrying(
                    partition, offset, retry.attempts, retry.error, retry.since
                )
                held = (now - retry.since).total_seconds()
            metrics.RETRYING.labels(partition=str(partition)).set(held)
        reported = {p: r for p, r in self._reported.items() if p in owned}
        changed = [r for p, r in current.items() if reported.get(p) != r]
        finished = [p for p in reported if p not in current]
        if not changed and not finished:
            return
        try:
            await self._repo.report_retrying(
                self.settings.consumer_group, self.settings.topic, changed, finished
            )
        except TransientError as exc:
            log.warning("retrying_report_failed", error=str(exc))
            return
        self._reported = {p: r for p, r in current.items()}

    async def commit(self, partitions: list[TopicPartition]) -> None:
        """Commit finished offsets; a rebalance in progress makes this a no-op (the next
        owner resumes from the last commit, and resuming is idempotent)."""
        if self.consumer is None:
            return
        offsets = {}
        for tp in partitions:
            worker = self.workers.get(tp)
            if (
                worker is not None
                and worker.done is not None
                and worker.done != self.committed.get(tp)
            ):
                offsets[tp] = worker.done
        if not offsets:
            return
        try:
            await asyncio.wait_for(self.consumer.commit(offsets), COMMIT_TIMEOUT_S)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning("commit_skipped", error=str(exc))
            return
        except (KafkaError, TimeoutError) as exc:
            log.warning("commit_failed", error=repr(exc))
            return
        self.committed.update(offsets)
        for tp, offset in offsets.items():
            log.debug("offset_committed", partition=tp.partition, offset=offset)

    async def release(self, partitions: list[TopicPartition]) -> None:
        """Stop the workers of ``partitions`` at a safe point and commit what they finished."""
        owned = [tp for tp in partitions if tp in self.workers]
        await asyncio.gather(
            *(self.workers[tp].stop(self.settings.shutdown_grace_s) for tp in owned)
        )
        await self.commit(owned)
        for tp in owned:  # a concurrent release (SIGTERM during a revocation) may be first
            self.workers.pop(tp, None)
            self.committed.pop(tp, None)
            metrics.forget_partition(tp.partition)

    async def _shutdown(self, side_tasks: list[asyncio.Task[None]]) -> None:
        self.state = RunnerState.DRAINING
        log.info("consumer_draining", partitions=len(self.workers))
        for task in side_tasks:
            task.cancel()
        await asyncio.gather(*side_tasks, return_exceptions=True)
        await self.release(list(self.workers))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Never waits on anything the fetch loop holds: workers are independent tasks."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))
        if revoked:
            self.runner.revocations += 1
        await self.runner.release(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))
