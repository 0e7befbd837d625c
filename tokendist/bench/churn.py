"""Churn: credited/s while one consumer after another is SIGKILLed and restarted at once
(same instance id under static membership), against credited/s with no fault.

One group of ``consumers`` processes and a relay serve two phases in turn, each a burst
of ``events`` payments on a tokenization of its own: first untouched (the baseline), then
with one member, round-robin, SIGKILLed and restarted every ``every_s`` seconds until
every payment is credited or ``churn_s`` has passed (a dynamic group may never finish
under churn; the rest then drains without faults, uncounted). A phase's credited/s runs
from its first confirmation to its last credit, or to the end of the churn (PostgreSQL's
clock, as in ``e2e``).

The stall after a kill: from the SIGKILL (the restart follows at once) until every
partition that still had work has credited again; the killed member's partitions are the
last to, the others go on between blocks. Member-agnostic on purpose, so that static and
dynamic membership are measured alike (a dynamic group stops every partition to
rebalance). Its floor is the time a distribution takes on the chain.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from tokendist.bench import e2e, queries, sandbox, workload
from tokendist.bench.procs import Service, check_alive
from tokendist.bench.results import ChurnResult, Rate
from tokendist.core import kafka
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment

POLL_S = 0.25
STATIC, DYNAMIC = "static", "dynamic"
MEMBERSHIPS = (STATIC, DYNAMIC)

CREDITED_BY = """
SELECT count(*) FROM distributions
WHERE tokenization_id = $1 AND state = 'credited' AND credited_at <= $2
"""

# The first credit after ``$2`` on each partition that credited anything after it.
FIRST_CREDITS = """
SELECT kafka_partition, min(credited_at) AS first
FROM distributions
WHERE tokenization_id = $1 AND state = 'credited' AND credited_at > $2
GROUP BY kafka_partition
"""


@dataclass(frozen=True, slots=True)
class Load:
    membership: str  # STATIC or DYNAMIC
    consumers: int
    events: int  # per phase
    every_s: float
    churn_s: float  # kills stop after this long; the rest is credited without faults
    wallets: list[str]
    writers: int
    timeout_s: float  # per phase
    log_dir: Path
    log_level: str


def stall_seconds(kill: datetime, first_credits: list[datetime]) -> float | None:
    """From ``kill`` to the last of the partitions' first credits after it (None: no
    partition had work left)."""
    return max((t - kill).total_seconds() for t in first_credits) if first_credits else None


async def run(settings: Settings, pool: asyncpg.Pool, load: Load) -> ChurnResult:
    tag = f"churn-{load.membership}"
    quiet = await sandbox.deploy(settings, f"bench-{tag}-quiet")
    churned = await sandbox.deploy(settings, f"bench-{tag}-churn")
    await kafka.ensure_topics(settings)
    incarnations = [0] * load.consumers

    def member(k: int) -> Service:
        # Instance ids unique per member, kept by its restarts; two live members sharing
        # one would fence each other.
        instance = f"{settings.consumer_group}.{k}" if load.membership == STATIC else None
        own = settings.model_copy(update={"consumer_instance_id": instance})
        incarnations[k] += 1
        log = load.log_dir / f"{tag}-consumer-{k}.{incarnations[k]}.log"
        return Service(own, "consume", log, load.log_level)

    services: dict[str, Service] = {}
    try:
        services["relay"] = Service(
            settings, "relay", load.log_dir / f"{tag}-relay.log", load.log_level
        )
        for k in range(load.consumers):
            services[f"consumer-{k}"] = member(k)
        deadline = time.monotonic() + load.timeout_s
        await e2e.wait_ready(settings, pool, list(services.values()), load.consumers, deadline)
        baseline, _, quiet_done = await _phase(pool, quiet, load, services, None)
        churn, kills, churn_done = await _phase(pool, churned, load, services, member)
    finally:
        await asyncio.gather(*(s.stop(settings.shutdown_grace_s + 15) for s in services.values()))
    stalls = [
        s
        for kill in kills
        if (s := stall_seconds(kill, await _first_credits(pool, churned.tokenization_id, kill)))
        is not None
    ]
    verified, _ = await e2e.verify_run(settings, pool)
    return ChurnResult(
        membership=load.membership,
        consumers=load.consumers,
        events=load.events,
        every_s=load.every_s,
        baseline=baseline,
        churned=churn,
        ratio=churn.per_second / baseline.per_second if baseline.per_second else 0.0,
        kills=len(kills),
        stall_median_ms=round(1000 * statistics.median(stalls)) if stalls else None,
        stall_max_ms=round(1000 * max(stalls)) if stalls else None,
        verified=verified,
        timed_out=not (quiet_done and churn_done),
    )


async def _phase(
    pool: asyncpg.Pool,
    tk: Deployment,
    load: Load,
    services: dict[str, Service],
    restart: Callable[[int], Service] | None,
) -> tuple[Rate, list[datetime], bool]:
    """One burst; with ``restart``, a member killed and restarted every ``every_s``
    meanwhile, for at most ``churn_s``. Returns credited/s up to the end of the churn (all
    credited, or ``churn_s`` passed), the kills' instants (PostgreSQL's clock), and
    whether every payment was credited, after the churn, before the timeout."""
    confirming = asyncio.create_task(
        workload.confirm_payments(
            pool,
            tk,
            f"{load.membership}-{tk.tokenization_id}",
            load.events,
            load.wallets,
            writers=load.writers,
            rate=0.0,
        ),
        name="payment-service",
    )
    kills: list[datetime] = []
    started = time.monotonic()
    next_kill = started + load.every_s
    churn_end: datetime | None = None
    try:
        while not await _all_done(pool, tk, load.events):
            check_alive(list(services.values()))
            now = time.monotonic()
            if now > started + load.timeout_s:
                break
            if restart is not None and churn_end is None and now >= next_kill:
                if now > started + load.churn_s:
                    churn_end = await _clock(pool)  # the kills stop; the rest drains
                else:
                    k = len(kills) % load.consumers
                    services[f"consumer-{k}"].kill()
                    kills.append(await _clock(pool))
                    services[f"consumer-{k}"] = restart(k)
                    next_kill += load.every_s
            await asyncio.sleep(POLL_S)
    finally:
        await confirming
    return await _rate(pool, tk, churn_end), kills, await _all_done(pool, tk, load.events)


async def _rate(pool: asyncpg.Pool, tk: Deployment, until: datetime | None) -> Rate:
    """Credited/s from the first confirmation to the last credit, or to ``until``."""
    window = await pool.fetchrow(queries.WINDOW, tk.tokenization_id)
    assert window is not None
    if until is None:
        credited, end = await _credited(pool, tk), window["last_credited"]
    else:
        credited, end = await pool.fetchval(CREDITED_BY, tk.tokenization_id, until), until
    span = (end - window["first_confirmed"]).total_seconds() if end is not None else 0.0
    return Rate.of("credited", credited, span)


async def _credited(pool: asyncpg.Pool, tk: Deployment) -> int:
    row = await pool.fetchrow(queries.OUTCOMES, tk.tokenization_id)
    assert row is not None
    return int(row["credited"])


async def _all_done(pool: asyncpg.Pool, tk: Deployment, events: int) -> bool:
    row = await pool.fetchrow(queries.OUTCOMES, tk.tokenization_id)
    assert row is not None
    return bool(row["credited"] + row["failed"] >= events)


async def _clock(pool: asyncpg.Pool) -> datetime:
    now: datetime = await pool.fetchval("SELECT clock_timestamp()")
    return now


async def _first_credits(
    pool: asyncpg.Pool, tokenization_id: str, kill: datetime
) -> list[datetime]:
    return [r["first"] for r in await pool.fetch(FIRST_CREDITS, tokenization_id, kill)]
