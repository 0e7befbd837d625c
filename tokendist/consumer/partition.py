"""One worker per assigned partition: its records pipelined, one user at a time.

Up to ``window`` records of a partition are in progress at once, but records with the same
key (one user's events) run strictly one after another, in offset order: a user's second
payment never starts before the first has finished. Users are independent, so a slow chain
confirmation of one no longer holds up every other user hashed to the same partition.

The worker owns nothing durable. ``done`` is the next offset safe to commit: it moves past
a record only once that record and every record before it in the partition finished
(credited, parked, failed or dead-lettered). A transient failure (an outage: the broker,
the database or the node) retries the same record with capped, jittered backoff for as
long as the outage lasts; the user's later records wait, and the offset stays where it
is. An unexpected error is retried too, but only ``park_after`` times: then the record is
parked (dead-lettered with reason ``processing_error``) so that no single record can stop
its partition for good. Parking is safe for a record with money in it: processing resumes
from the state stored in PostgreSQL whenever the record is re-driven. A record runs only
after its user's previous record finished: if that one never does (a stop cut it short),
neither does this one. Which records are being retried, since when and why is kept in
``retrying`` for the runner to publish.

Stopping takes no more records from the queue but gives every record in hand (at most
``window``) its chance within the grace period, so that what finished can be committed
without a gap left by an earlier record that was dropped unstarted.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from tokendist.core import metrics
from tokendist.core.errors import TransientError
from tokendist.core.failpoints import Failpoints
from tokendist.core.retry import backoff

log = structlog.get_logger("tokendist.partition")

Process = Callable[[Any], Awaitable[object]]
Park = Callable[[Any, str, str], Awaitable[None]]  # (record, reason, detail)

PARK_REASON = "processing_error"


class WorkerState(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"  # finishing the records in hand, taking no new ones
    STOPPED = "stopped"


@dataclass(slots=True)
class _InHand:
    offset: int
    finished: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """A record being retried: how often, since when, and the last error."""

    attempts: int
    since: datetime
    error: str


class PartitionWorker:
    def __init__(
        self,
        partition: int,
        process: Process,
        *,
        park: Park,
        park_after: int,
        window: int,
        retry_base_s: float,
        retry_cap_s: float,
        failpoints: Failpoints | None = None,
    ) -> None:
        self.partition = partition
        self.state = WorkerState.RUNNING
        self.done: int | None = None
        self.retrying: dict[int, Retry] = {}  # by offset
        self._process = process
        self._park = park
        self._park_after = park_after
        self._retry = (retry_base_s, retry_cap_s)
        self._failpoints = failpoints or Failpoints()
        self._queue: collections.deque[Any] = collections.deque()
        self._ready = asyncio.Event()
        self._slots = asyncio.Semaphore(window)
        # In offset order; a deque, not a dict by offset, so a record delivered twice
        # (a fetch position reset) is tracked twice rather than confused with itself.
        self._in_hand: collections.deque[_InHand] = collections.deque()
        self._last_of_user: dict[bytes | None, asyncio.Task[bool]] = {}
        self._running: set[asyncio.Task[bool]] = set()
        self._intake = asyncio.create_task(self._take(), name=f"partition-{partition}")
        self._stopping: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def feed(self, records: list[Any]) -> None:
        if self.state is WorkerState.RUNNING:
            self._queue.extend(records)
            self._ready.set()

    async def stop(self, grace_s: float) -> None:
        """Finish the records in hand (up to ``grace_s``), then stop. Idempotent and safe
        to call concurrently (SIGTERM arriving during a rebalance's revocation): every
        caller awaits the same stopping task.

        Cancelling past the grace period is safe: the records' offsets are not done, and
        whoever processes them next resumes from the state stored in PostgreSQL."""
        if self._stopping is None:
            self.state = WorkerState.STOPPING
            self._queue.clear()
            # Here, not in the stopping task: a slot freed meanwhile could otherwise wake
            # the intake to take from the emptied queue.
            self._intake.cancel()
            self._stopping = asyncio.create_task(self._stop(grace_s), name="stop-partition")
        await asyncio.shield(self._stopping)

    async def _stop(self, grace_s: float) -> None:
        await asyncio.gather(self._intake, return_exceptions=True)
        if self._running:
            _, late = await asyncio.wait(self._running, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self.state = WorkerState.STOPPED

    async def _take(self) -> None:
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            await self._slots.acquire()
            record = self._queue.popleft()
            in_hand = _InHand(record.offset)
            self._in_hand.append(in_hand)
            user = record.key
            task = asyncio.create_task(
                self._run(record, in_hand, self._last_of_user.get(user)),
                name=f"partition-{self.partition}-offset-{record.offset}",
            )
            self._last_of_user[user] = task
            self._running.add(task)
            task.add_done_callback(functools.partial(self._release, user=user))

    def _release(self, task: asyncio.Task[bool], user: bytes | None) -> None:
        self._running.discard(task)
        if self._last_of_user.get(user) is task:
            del self._last_of_user[user]
        self._slots.release()

    async def _run(
        self, record: Any, in_hand: _InHand, previous: asyncio.Task[bool] | None
    ) -> bool:
        if previous is not None and not await _finished(previous):
            return False
        if not await self._process_until_done(record):
            return False
        self._failpoints.hit("before:offset_commit")
        in_hand.finished = True
        while self._in_hand and self._in_hand[0].finished:
            self.done = self._in_hand.popleft().offset + 1
        return True

    async def _process_until_done(self, record: Any) -> bool:
        failures: list[str] = []  # unexpected errors only: an outage is not the record's fault
        attempt = 0
        since = datetime.now(UTC)
        with structlog.contextvars.bound_contextvars(
            partition=record.partition, offset=record.offset
        ):
            try:
                while True:
                    error = await self._attempt(record, failures)
                    if error is None:
                        return True
                    attempt += 1
                    self.retrying[record.offset] = Retry(attempt, since, error)
                    if self.state is WorkerState.RUNNING:
                        await asyncio.sleep(backoff(attempt, *self._retry))
                    if self.state is not WorkerState.RUNNING:
                        return False  # a stopping worker does not retry
            finally:
                self.retrying.pop(record.offset, None)

    async def _attempt(self, record: Any, failures: list[str]) -> str | None:
        """Process the record, or park it once it failed ``park_after`` times: ``None``
        when it is done, else the error that makes it wait."""
        parking = len(failures) >= self._park_after
        try:
            if parking:
                await self._park(record, PARK_REASON, f"{len(failures)} attempts: {failures[-1]}")
                metrics.PARKED_AFTER_ERRORS.inc()
                log.error("event_parked_after_errors", attempts=len(failures), alert=True)
            else:
                await self._process(record)
            return None
        except TransientError as exc:
            metrics.RETRIES.labels(error=type(exc).__name__).inc()
            log.warning("event_retrying", error=str(exc), parking=parking)
            return f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            metrics.RETRIES.labels(error=type(exc).__name__).inc()
            if parking:  # parking itself fails: nothing else can free the partition
                metrics.UNPARKABLE.inc()
                log.exception("event_unparkable", error=repr(exc), alert=True)
            else:
                failures.append(repr(exc)[:500])
                log.exception("event_error", error=repr(exc), attempt=len(failures), alert=True)
            return repr(exc)[:500]


async def _finished(task: asyncio.Task[bool]) -> bool:
    await asyncio.wait({task})
    return not task.cancelled() and task.exception() is None and task.result()
