"""``python -m tokendist.bench.cdc``: the polling relay and Debezium CDC side by side.

Both publish the same kind of outbox rows, one after the other, from a database of the
benchmark's own, each to a topic of its own whose records carry the broker's append time
(``LogAppendTime``), so both paths are timed by the same clock:

- throughput: N rows committed while the publisher is stopped, then the publisher started;
  rows/s = the N records over the span from the first append to the last (start-up of the
  relay or of the JVM is left out: it is paid once, not per row);
- latency: M rows committed one transaction each at a steady rate while the publisher
  runs; per row, its append time minus its ``created_at`` (the outbox → topic delay).

The relay runs in this process; Debezium runs in a Kafka Connect worker of its own
(``stack/stack.sh start-service cdc``, the shipped connector configuration). Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.admin import NewTopic

from tokendist.bench import sandbox, workload
from tokendist.bench.cdc_worker import ConnectWorker
from tokendist.core import db, kafka
from tokendist.core.settings import Settings, SettingsError, load_settings
from tokendist.outbox import enqueue
from tokendist.outbox.relay import Relay
from tokendist.sim.demo import free_port

CREATED_AT = "SELECT payload->>'event_id' AS event_id, created_at FROM outbox"
USERS = 100  # Kafka keys: enough to spread the rows over every partition


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tokendist.bench.cdc", description=__doc__)
    parser.add_argument("--rows", type=int, default=5000, help="rows for the throughput run")
    parser.add_argument("--latency-rows", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="rows/s of the latency run")
    return parser.parse_args(argv)


async def bench(shared: Settings, stack_dir: str, args: argparse.Namespace) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    settings = sandbox.bench_settings(shared, run)
    wallets = workload.make_wallets(USERS)
    async with sandbox.isolated_database(settings.database_url) as url:
        settings = settings.in_database(url)
        pool = await db.create_pool(url, max_size=8)
        try:
            relay = await _relay(sandbox.renamed(settings, "relay"), pool, wallets, args)
            cdc = await _cdc(sandbox.renamed(settings, "cdc"), pool, wallets, args, stack_dir)
        finally:
            await pool.close()
    return {"bench": "cdc", "rows": args.rows, "latency_rows": args.latency_rows,
            "rate": args.rate, "relay": relay, "debezium": cdc}  # fmt: skip


async def _relay(
    settings: Settings, pool: asyncpg.Pool, wallets: list[str], args: argparse.Namespace
) -> dict[str, float]:
    await _topic(settings)
    await _fill(pool, "relay-t", args.rows, wallets)
    async with _relay_running(settings):
        throughput = await _drain_rate(settings, pool, args.rows)
        latency = await _latency(settings, pool, "relay-l", wallets, args, before=args.rows)
    return {"rows_per_s": throughput, **latency}


@contextlib.asynccontextmanager
async def _relay_running(settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(Relay(settings.relay(), stop).run(), name="relay")
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def _cdc(
    settings: Settings,
    pool: asyncpg.Pool,
    wallets: list[str],
    args: argparse.Namespace,
    stack_dir: str,
) -> dict[str, float]:
    await _topic(settings)
    with tempfile.TemporaryDirectory(prefix="bench-cdc-") as home:
        worker = ConnectWorker(
            settings,
            stack_dir=stack_dir,
            home=Path(home),
            name=f"bench_{uuid.uuid4().hex[:12]}",
            rest_port=free_port(),
        )
        try:
            # The relay published every earlier row: the first snapshot sends nothing.
            await worker.start()
            latency = await _latency(settings, pool, "cdc-l", wallets, args, before=0)
            await worker.stop()
            await _fill(pool, "cdc-t", args.rows, wallets)
            await worker.start()
            throughput = await _drain_rate(settings, pool, args.rows, skip=args.latency_rows)
        finally:
            await worker.stop()
            await worker.drop_slot()
    return {"rows_per_s": throughput, **latency}


async def _topic(settings: Settings) -> None:
    admin = kafka.admin(settings)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    settings.topic,
                    num_partitions=settings.topic_partitions,
                    replication_factor=settings.topic_replication,
                    topic_configs={"message.timestamp.type": "LogAppendTime"},
                )
            ]
        )
    finally:
        await admin.close()


async def _fill(pool: asyncpg.Pool, tag: str, n: int, wallets: list[str]) -> None:
    events = [workload.payment(None, tag, i, wallets).event() for i in range(n)]

    async def write(conn: db.Connection, i: int) -> None:
        async with conn.transaction():
            await enqueue(conn, events[i])

    await workload.spread(pool, n, 4, write)


async def _drain_rate(settings: Settings, pool: asyncpg.Pool, n: int, skip: int = 0) -> float:
    """Rows/s over the appends of the ``n`` records after the first ``skip``."""
    records = (await _read(settings, skip + n))[skip:] if skip else await _read(settings, n)
    times: list[int] = sorted(r.timestamp for r in records)
    return round((len(times) - 1) / max((times[-1] - times[0]) / 1000, 1e-3), 1)


async def _latency(
    settings: Settings,
    pool: asyncpg.Pool,
    tag: str,
    wallets: list[str],
    args: argparse.Namespace,
    *,
    before: int,
) -> dict[str, float]:
    events = [workload.payment(None, tag, i, wallets).event() for i in range(args.latency_rows)]

    async def write(conn: db.Connection, i: int) -> None:
        async with conn.transaction():
            await enqueue(conn, events[i])

    await workload.spread(pool, args.latency_rows, 1, write, args.rate)
    records = (await _read(settings, before + args.latency_rows))[before:]
    wanted = {str(e.event_id) for e in events}
    created = {r["event_id"]: r["created_at"] for r in await pool.fetch(CREATED_AT)}
    delays = sorted(
        r.timestamp - created[doc].timestamp() * 1000
        for r in records
        if (doc := json.loads(r.value)["event_id"]) in wanted
    )
    q = statistics.quantiles(delays, n=100)
    return {"latency_p50_ms": round(q[49], 1), "latency_p99_ms": round(q[98], 1),
            "latency_max_ms": round(delays[-1], 1)}  # fmt: skip


async def _read(settings: Settings, n: int, within_s: float = 300.0) -> list[Any]:
    """The topic's first ``n`` records in append order (one consumer over all partitions)."""
    consumer = kafka.consumer(
        settings,
        settings.topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + within_s
    try:
        while len(records) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{settings.topic}: {len(records)} of {n} records arrived")
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return sorted(records, key=lambda r: r.timestamp)[:n]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack_dir = os.environ.get("TOKENDIST_STACK_DIR")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"bench.cdc: {exc}", file=sys.stderr)
        return 2
    if not stack_dir:
        print('bench.cdc: TOKENDIST_STACK_DIR not set (eval "$(stack/stack.sh env)")')
        return 2
    print(json.dumps(asyncio.run(bench(settings, stack_dir, args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
