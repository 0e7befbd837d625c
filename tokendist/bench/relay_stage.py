"""Relay throughput: N outbox rows already committed, one Relay, until all are published.

The relay runs in this process (``Relay(settings, stop).run()``) so the clock starts at
the exact moment it does; its memory is measured in the end-to-end runs instead, where
it is a process of its own.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from tokendist.bench import sandbox, workload
from tokendist.bench.results import Rate, RelayResult
from tokendist.core.settings import Settings
from tokendist.outbox.relay import Relay

UNPUBLISHED = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
POLL_S = 0.02  # the finish is seen at most this late; small next to any realistic run


async def run(
    settings: Settings, pool: asyncpg.Pool, rows: int, writers: int
) -> tuple[Rate, RelayResult]:
    """Returns (enqueue transactions/s while filling the outbox, the relay's figures)."""
    seconds = await workload.enqueue_events(pool, rows, writers)
    enqueue_rate = Rate.of(f"enqueue transactions ({writers} connections)", rows, seconds)

    # Created (and its partitions led) beforehand: the timed part is publishing.
    await sandbox.warmed_topic(settings)
    started_at = await pool.fetchval("SELECT clock_timestamp()")
    stop = asyncio.Event()
    relay = Relay(settings.relay(), stop)
    start = time.perf_counter()
    task = asyncio.create_task(relay.run(), name="relay")
    try:
        while await pool.fetchval(UNPUBLISHED):
            if task.done():
                task.result()  # a crashed relay: raise its error instead of polling forever
                raise RuntimeError("relay stopped before publishing everything")
            await asyncio.sleep(POLL_S)
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)

    # published_at is now() of the claiming transaction: the earliest one is when the
    # first batch was claimed, i.e. the end of the relay's start-up.
    first_claim = await pool.fetchval("SELECT min(published_at) FROM outbox")
    startup_ms = int((first_claim - started_at).total_seconds() * 1000)
    published = Rate.of("relay publish", rows, elapsed)
    return enqueue_rate, RelayResult(
        published=published, startup_ms=startup_ms, batch_size=settings.relay_batch_size
    )
