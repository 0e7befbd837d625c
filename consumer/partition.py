"""One worker per assigned partition: its records in order, one at a time.

The worker owns nothing durable. ``done`` is the next offset safe to commit: it moves
only after ``process`` returned for a record (credited, parked, failed or dead-lettered).
A transient failure retries the same record with capped, jittered backoff; the partition
waits and its offset stays where it is.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from tokendist import metrics
from tokendist.errors import TransientError
from tokendist.failpoints import Failpoints
from tokendist.retry import backoff

log = structlog.get_logger("tokendist.partition")

Process = Callable[[Any], Awaitable[object]]


class WorkerState(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"  # finishing the record in hand, taking no new ones
    STOPPED = "stopped"


class PartitionWorker:
    def __init__(
        self,
        partition: int,
        process: Process,
        *,
        retry_base_s: float,
        retry_cap_s: float,
        failpoints: Failpoints | None = None,
    ) -> None:
        self.partition = partition
        self.state = WorkerState.RUNNING
        self.done: int | None = None
        self._process = process
        self._retry = (retry_base_s, retry_cap_s)
        self._failpoints = failpoints or Failpoints()
        self._queue: collections.deque[Any] = collections.deque()
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"partition-{partition}")
        self._stopping: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def feed(self, records: list[Any]) -> None:
        if self.state is WorkerState.RUNNING:
            self._queue.extend(records)
            self._ready.set()

    async def stop(self, grace_s: float) -> None:
        """Finish the record in hand (up to ``grace_s``), then stop. Idempotent and safe
        to call concurrently (SIGTERM arriving during a rebalance's revocation): every
        caller awaits the same stopping task.

        Cancelling past the grace period is safe: the record's offset is not done, and
        whoever processes it next resumes from the state stored in PostgreSQL."""
        if self._stopping is None:
            self.state = WorkerState.STOPPING
            self._queue.clear()
            self._ready.set()
            self._stopping = asyncio.create_task(self._stop(grace_s), name="stop-partition")
        await asyncio.shield(self._stopping)

    async def _stop(self, grace_s: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=grace_s)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.state = WorkerState.STOPPED

    async def _run(self) -> None:
        while self.state is WorkerState.RUNNING:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            record = self._queue.popleft()
            if await self._process_until_done(record):
                self._failpoints.hit("before:offset_commit")
                self.done = record.offset + 1

    async def _process_until_done(self, record: Any) -> bool:
        attempt = 0
        with structlog.contextvars.bound_contextvars(
            partition=record.partition, offset=record.offset
        ):
            while self.state is WorkerState.RUNNING:
                try:
                    await self._process(record)
                    return True
                except TransientError as exc:
                    metrics.RETRIES.labels(error=type(exc).__name__).inc()
                    attempt += 1
                    delay = backoff(attempt, *self._retry)
                    log.warning("event_retrying", error=str(exc), attempt=attempt, delay_s=delay)
                except Exception as exc:
                    # A bug or an unforeseen error: never skip an event with money in it.
                    # The partition waits and retries until a human fixes the cause.
                    metrics.RETRIES.labels(error=type(exc).__name__).inc()
                    attempt += 1
                    delay = backoff(attempt, *self._retry)
                    log.exception("event_error", error=repr(exc), attempt=attempt, alert=True)
                await asyncio.sleep(delay)
            return False
