"""End to end: payments confirmed → relay → Kafka → N consumer processes → chain →
holdings credited, with a fresh tokenization, topic and group per run.

The clock is PostgreSQL's: from the first ``confirmed_at`` to the last ``credited_at``.
Relay and consumers start first and are waited for (relay leading, group stable with N
members), so the figures are the pipeline's, not its start-up's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench import queries, sandbox, workload
from bench.procs import Service, check_alive
from bench.results import EndToEnd, Percentiles, Rate
from consumer.chain import Chain
from consumer.verify import verify
from outbox.relay import LEADER_LOCK
from tokendist import kafka
from tokendist.settings import Settings

POLL_S = 0.25


@dataclass(frozen=True, slots=True)
class Load:
    events: int
    wallets: list[str]
    writers: int
    rate: float  # confirmations per second; 0 = a burst, as fast as PostgreSQL takes them
    timeout_s: float
    log_dir: Path
    log_level: str


async def run(base: Settings, pool: asyncpg.Pool, consumers: int, load: Load) -> EndToEnd:
    tag = f"c{consumers}"
    settings = sandbox.renamed(base, tag)
    tk = await sandbox.deploy(settings, f"bench-{tag}")
    await kafka.ensure_topics(settings)  # before the services, so none races to create it
    deadline = time.monotonic() + load.timeout_s

    def start(command: str, name: str) -> Service:
        return Service(settings, command, load.log_dir / f"{tag}-{name}.log", load.log_level)

    services: list[Service] = []
    try:
        # Appended one by one: if a start fails, the ones already running are stopped.
        relay = start("relay", "relay")
        services.append(relay)
        members: list[Service] = []
        for k in range(consumers):
            members.append(start("consume", f"consumer-{k}"))
            services.append(members[-1])
        await _ready(settings, pool, services, consumers, deadline)
        confirm_s = await workload.confirm_payments(
            pool, tk, tag, load.events, load.wallets, writers=load.writers, rate=load.rate
        )
        finished = await _finished(pool, tk.tokenization_id, load.events, services, deadline)
        # Peaks are read while the processes still exist: /proc/<pid> goes with them.
        relay_rss = relay.peak_rss_kib()
        consumer_rss = [m.peak_rss_kib() for m in members]
    finally:
        grace = settings.shutdown_grace_s + 15
        await asyncio.gather(*(s.stop(grace) for s in services))

    outcomes = await pool.fetchrow(queries.OUTCOMES, tk.tokenization_id)
    window = await pool.fetchrow(queries.WINDOW, tk.tokenization_id)
    assert outcomes is not None
    assert window is not None
    span_s = (
        (window["last_credited"] - window["first_confirmed"]).total_seconds()
        if window["last_credited"] is not None
        else 0.0
    )
    verified, verify_text = await _verify(settings, pool)
    return EndToEnd(
        consumers=consumers,
        events=load.events,
        users=len(load.wallets),
        rate=load.rate,
        credited=outcomes["credited"],
        failed=outcomes["failed"],
        confirm=Rate.of("confirm", load.events, confirm_s),
        throughput=Rate.of("end to end", outcomes["credited"], span_s),
        latency=await _percentiles(pool, tk.tokenization_id, *queries.TOTAL),
        segments={
            name: await _percentiles(pool, tk.tokenization_id, *cols)
            for name, cols in queries.SEGMENTS.items()
        },
        in_flight=await _percentiles(pool, tk.tokenization_id, *queries.IN_FLIGHT),
        max_inflight=settings.max_inflight_per_sender,
        blocks=window["blocks"],
        consumer_peak_rss_kib=consumer_rss,
        relay_peak_rss_kib=relay_rss,
        verified=verified,
        verify_report=verify_text,
        timed_out=not finished,
    )


async def _ready(
    settings: Settings,
    pool: asyncpg.Pool,
    services: list[Service],
    consumers: int,
    deadline: float,
) -> None:
    """Relay leading and every consumer in a stable group: only then is a payment's
    latency the pipeline's. A consumer joining later would rebalance mid-measurement."""
    while True:
        check_alive(services)
        leading = await pool.fetchval(queries.RELAY_LEADING, LEADER_LOCK)
        state, members = await sandbox.group_members(settings)
        if leading and state == "Stable" and members == consumers:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not ready: relay leading={leading}, group {state}/{members}")
        await asyncio.sleep(POLL_S)


async def _finished(
    pool: asyncpg.Pool, tokenization_id: str, events: int, services: list[Service], deadline: float
) -> bool:
    """Until every event is credited or failed; False when the deadline came first (the
    report then shows how far it got instead of hanging)."""
    while True:
        check_alive(services)
        row = await pool.fetchrow(queries.OUTCOMES, tokenization_id)
        assert row is not None
        if row["credited"] + row["failed"] >= events:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_S)


async def _percentiles(
    pool: asyncpg.Pool, tokenization_id: str, start: str, end: str
) -> Percentiles:
    row = await pool.fetchrow(queries.percentiles(start, end), tokenization_id)
    assert row is not None
    p50, p90, p99 = row["p"] if row["p"] is not None else (None, None, None)
    return Percentiles(
        n=row["n"], p50_ms=p50, p90_ms=p90, p99_ms=p99, max_ms=row["max_ms"], mean_ms=row["mean_ms"]
    )


async def _verify(settings: Settings, pool: asyncpg.Pool) -> tuple[bool, str]:
    """`tokendist verify` over the whole database: a fast run that paid twice, or lost a
    payment, is not a result. Grace 0: by now nothing may still be in flight."""
    rpc_url, key = settings.require_chain()
    chain = Chain(rpc_url, key)
    try:
        async with pool.acquire() as conn:
            report = await verify(conn, chain, grace_s=0.0)
    finally:
        await chain.close()
    return report.ok, report.render()
