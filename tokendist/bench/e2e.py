"""End to end: payments confirmed → relay → Kafka → N consumer processes → chain →
holdings credited, with a fresh tokenization, topic and group per run. The payment
service confirms while ``watch`` samples lag and memory.

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

from tokendist.bench import queries, sandbox, workload
from tokendist.bench.procs import Service, check_alive
from tokendist.bench.profile import Recorder, summarize
from tokendist.bench.results import EndToEnd, LagVerdict, MemoryPoint, Percentiles, Rate
from tokendist.bench.watch import Watch, lag_verdict, memory_growth, memory_points
from tokendist.consumer.chain import Chain
from tokendist.core import kafka
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops.verify import verify
from tokendist.outbox.relay import LEADER_LOCK

POLL_S = 0.25
PROFILE_WRITE_S = 60.0  # py-spy writes its file once the consumer has exited


@dataclass(frozen=True, slots=True)
class Load:
    mode: str  # "burst", "sustained" or "memory": how the report reads the run
    block_time_s: float  # of the chain the run is on
    ceiling_per_s: float  # that chain's physical ceiling (``ChainStages.ceiling_per_s``)
    events: int
    wallets: list[str]
    writers: int
    rate: float  # confirmations per second; 0 = a burst, as fast as PostgreSQL takes them
    timeout_s: float
    log_dir: Path
    log_level: str
    profile: bool  # py-spy on each consumer


async def run(settings: Settings, pool: asyncpg.Pool, consumers: int, load: Load) -> EndToEnd:
    """One run on ``settings``' own topic and group (named by the caller, who deletes
    the topics afterwards)."""
    tag = f"{load.block_time_s:g}s-{load.mode}-c{consumers}"
    tk = await sandbox.deploy(settings, f"bench-{tag}")
    await kafka.ensure_topics(settings)  # before the services, so none races to create it
    deadline = time.monotonic() + load.timeout_s

    def start(command: str, name: str) -> Service:
        return Service(settings, command, load.log_dir / f"{tag}-{name}.log", load.log_level)

    services: dict[str, Service] = {}
    recorders: dict[str, Recorder] = {}
    confirming: asyncio.Task[float] | None = None
    try:
        # Added one by one: if a start fails, the ones already running are stopped.
        services["relay"] = start("relay", "relay")
        for k in range(consumers):
            services[f"consumer-{k}"] = start("consume", f"consumer-{k}")
        await wait_ready(settings, pool, list(services.values()), consumers, deadline)
        if load.profile:
            recorders = {
                name: Recorder(s.pid, load.log_dir / f"{tag}-{name}.pyspy.txt")
                for name, s in services.items()
                if name.startswith("consumer")
            }
        async with Watch(settings, pool, tk.tokenization_id, services) as watch:
            ready = await watch.sample(offering=False)
            confirming = asyncio.create_task(
                workload.confirm_payments(
                    pool, tk, tag, load.events, load.wallets, writers=load.writers, rate=load.rate
                ),
                name="payment-service",
            )
            finished = await watch.until_finished(confirming, load.events, deadline)
            # Read while the processes still exist: /proc/<pid> goes with them.
            end = await watch.sample(offering=False)
        peaks = {name: s.peak_rss_kib() for name, s in services.items()}
    finally:
        if confirming is not None and not confirming.done():
            confirming.cancel()
        grace = settings.shutdown_grace_s + 15
        await asyncio.gather(*(s.stop(grace) for s in services.values()))
    profile = {name: summarize(await r.finish(PROFILE_WRITE_S)) for name, r in recorders.items()}
    memory = memory_points(ready, watch.samples, end, load.events)
    return await _result(
        settings,
        pool,
        tk.tokenization_id,
        consumers,
        load,
        confirm_s=confirming.result() if confirming.done() and not confirming.cancelled() else 0.0,
        peaks=peaks,
        lag=lag_verdict(watch.samples, load.rate),
        memory=memory,
        profile=profile,
        timed_out=not finished,
    )


async def _result(
    settings: Settings,
    pool: asyncpg.Pool,
    tokenization_id: str,
    consumers: int,
    load: Load,
    *,
    confirm_s: float,
    peaks: dict[str, int | None],
    lag: LagVerdict,
    memory: list[MemoryPoint],
    profile: dict[str, list[tuple[str, float]]],
    timed_out: bool,
) -> EndToEnd:
    """The run's figures, from PostgreSQL's timestamps, and `verify`'s verdict."""
    outcomes = await pool.fetchrow(queries.OUTCOMES, tokenization_id)
    window = await pool.fetchrow(queries.WINDOW, tokenization_id)
    assert outcomes is not None
    assert window is not None
    span_s = (
        (window["last_credited"] - window["first_confirmed"]).total_seconds()
        if window["last_credited"] is not None
        else 0.0
    )
    verified, verify_text = await verify_run(settings, pool)
    _, keys = settings.require_keys()
    return EndToEnd(
        mode=load.mode,
        block_time_s=load.block_time_s,
        ceiling_per_s=load.ceiling_per_s,
        consumers=consumers,
        events=load.events,
        users=len(load.wallets),
        rate=load.rate,
        credited=outcomes["credited"],
        failed=outcomes["failed"],
        confirm=Rate.of("confirm", load.events, confirm_s),
        throughput=Rate.of("end to end", outcomes["credited"], span_s),
        latency=await _percentiles(pool, tokenization_id, *queries.TOTAL),
        segments={
            name: await _percentiles(pool, tokenization_id, *cols)
            for name, cols in queries.SEGMENTS.items()
        },
        in_flight=await _percentiles(pool, tokenization_id, *queries.IN_FLIGHT),
        max_inflight=settings.max_inflight_per_sender * len(keys),
        blocks=window["blocks"],
        batches=window["batches"],
        consumer_peak_rss_kib=[v for k, v in peaks.items() if k.startswith("consumer")],
        relay_peak_rss_kib=peaks["relay"],
        lag=lag,
        memory=memory,
        memory_growth_pct=memory_growth(memory),
        profile=profile,
        verified=verified,
        verify_report=verify_text,
        timed_out=timed_out,
    )


async def wait_ready(
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


async def _percentiles(
    pool: asyncpg.Pool, tokenization_id: str, start: str, end: str
) -> Percentiles:
    row = await pool.fetchrow(queries.percentiles(start, end), tokenization_id)
    assert row is not None
    p50, p90, p95, p99 = row["p"] if row["p"] is not None else (None,) * 4
    return Percentiles(
        n=row["n"],
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=row["max_ms"],
        mean_ms=row["mean_ms"],
    )


async def verify_run(settings: Settings, pool: asyncpg.Pool) -> tuple[bool, str]:
    """`tokendist verify` over the whole database: a fast run that paid twice, or lost a
    payment, is not a result. Grace 0: by now nothing may still be in flight."""
    rpc_url, key = settings.require_chain()
    chain = Chain(rpc_url, LocalSigner(key))
    try:
        async with pool.acquire() as conn:
            report = await verify(conn, chain, grace_s=0.0)
    finally:
        await chain.close()
    return report.ok, report.render()
