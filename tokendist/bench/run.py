"""``tokendist bench`` (or ``python -m tokendist.bench.run``, ``make bench``): stage baselines, then
the whole pipeline in burst, sustained-load and memory-growth runs, in one run on one
machine. Prints a report, then one JSON line with every figure.

Needs the stack's addresses in the environment (``eval "$(tokendist stack env)"``); all
else it makes for itself: databases (dropped at the end), funded keys, contracts,
topics and consumer groups, so it can run beside other users of the same stack.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg

from tokendist.bench import (
    chain_stage,
    churn,
    db_stage,
    e2e,
    options,
    relay_stage,
    report,
    sandbox,
    stages,
    summary,
    workload,
)
from tokendist.bench.results import (
    ChurnResult,
    EndToEnd,
    Environment,
    Rate,
    RelayResult,
    Report,
    Stages,
)
from tokendist.core import db, logs
from tokendist.core.errors import TransientError
from tokendist.core.settings import Settings, SettingsError, load_settings

# Sizes of the raw-stage samples: each takes a second or two on a small machine.
SIGN_COUNT = 2000
BLOCK_NUMBER_CALLS = 500
SEND_RAW_CALLS = 200
BLOCK_WATCH_S = 3.0


def settings_summary(settings: Settings, log_level: str) -> dict[str, object]:
    names = (
        "topic_partitions",
        "relay_batch_size",
        "max_inflight_per_sender",
        "confirmations",
        "receipt_poll_s",
        "max_partition_buffer",
    )
    return {**{n: getattr(settings, n) for n in names}, "log_level": log_level}


async def bench(args: argparse.Namespace, shared: Settings) -> Report:
    run_id = uuid.uuid4().hex[:10]
    base = await sandbox.bench_settings(shared, run_id)
    log_dir = Path(tempfile.mkdtemp(prefix=f"tokendist-bench-{run_id}-"))
    load_before = os.getloadavg()
    topics: list[str] = []

    def named(settings: Settings, suffix: str) -> Settings:
        s = sandbox.renamed(settings, suffix)
        topics.extend([s.topic, s.dlq_topic])
        return s

    async def run(mode: str, consumers: int, events: int, rate: float) -> EndToEnd:
        load = e2e.Load(
            mode=mode,
            events=events,
            wallets=workload.make_wallets(args.users),
            writers=args.writers,
            rate=rate,
            timeout_s=args.timeout or 600 + events / 2,
            log_dir=log_dir,
            log_level=args.service_log_level,
            profile=args.profile and mode == "burst",
        )
        return await _isolated(
            named(base, f"{mode}-c{consumers}"),
            load.wallets,
            load.writers,
            lambda own, pool: e2e.run(own, pool, consumers, load),
        )

    async def churned(membership: str) -> ChurnResult:
        load = churn.Load(
            membership=membership,
            consumers=args.churn_consumers,
            events=args.churn_events,
            every_s=args.churn_every_s,
            churn_s=args.churn_s,
            wallets=workload.make_wallets(args.users),
            writers=args.writers,
            timeout_s=args.timeout or 300 + args.churn_s + args.churn_events,
            log_dir=log_dir,
            log_level=args.service_log_level,
        )
        return await _isolated(
            named(base, f"churn-{membership}"),
            load.wallets,
            load.writers,
            lambda own, pool: churn.run(own, pool, load),
        )

    try:
        enqueued, relayed = await _relay(args, named(base, "relay"))
        result = Report(
            environment=Environment(
                cpus=os.cpu_count() or 0,
                load_before=load_before,
                load_after=load_before,  # replaced once everything ran
                settings=settings_summary(base, args.service_log_level),
                log_dir=str(log_dir),
            ),
            stages=await _stages(args, base, named(base, "kafka"), enqueued),
            relay=relayed,
        )
        await _end_to_end(args, result, run)
        for membership in args.churn_membership if "churn" in args.modes else []:
            result.churn.append(await churned(membership))
    finally:
        await sandbox.delete_topics(base, topics)
    summary.compare(result)
    result.environment = dataclasses.replace(result.environment, load_after=os.getloadavg())
    return result


async def _relay(args: argparse.Namespace, settings: Settings) -> tuple[Rate, RelayResult]:
    """(enqueue transactions/s, the relay's figures), in a database of its own."""
    async with sandbox.isolated_database(settings.database_url) as url:
        pool = await db.create_pool(url, max_size=args.writers + 4)
        try:
            return await relay_stage.run(
                settings.model_copy(update={"database_url": url}),
                pool,
                args.relay_rows,
                args.writers,
            )
        finally:
            await pool.close()


T = TypeVar("T")


async def _isolated(
    settings: Settings,
    wallets: list[str],
    writers: int,
    body: Callable[[Settings, asyncpg.Pool], Awaitable[T]],
) -> T:
    """``body`` with a database and an operator key of its own: a run cut short by its
    timeout leaves nothing that the next run's ``verify`` would count."""
    rpc_url, _ = settings.require_chain()
    operator = await sandbox.funded_key(rpc_url)
    async with sandbox.isolated_database(settings.database_url) as url:
        pool = await db.create_pool(url, max_size=writers + 4)
        try:
            await workload.register_users(pool, wallets)
            own = settings.model_copy(update={"database_url": url, "operator_key": operator})
            return await body(own, pool)
        finally:
            await pool.close()


async def _stages(
    args: argparse.Namespace, base: Settings, kafka_settings: Settings, enqueued: Rate
) -> Stages:
    """Every stage alone. The consumer's DB work gets a database of its own (created
    from ``base``'s server URL): its credits have no transfers on-chain."""
    sample = workload.payment(None, "sample", 0, workload.make_wallets(1)).event()
    payload = sample.model_dump_json().encode()
    produced = await stages.kafka_produce(kafka_settings, args.relay_rows, payload)
    consumed = await stages.kafka_consume(kafka_settings, len(payload))
    abi, signing = await stages.chain_cpu(base, SIGN_COUNT)
    block_number = await stages.rpc_block_number(base, BLOCK_NUMBER_CALLS)
    send_raw = await stages.rpc_send_raw(base, SEND_RAW_CALLS)
    interval = await stages.block_interval(base, BLOCK_WATCH_S)
    chain_settings, distributor = await chain_stage.deploy(base)
    capped = await chain_stage.sent_and_mined(
        chain_settings, distributor, args.chain_txs, base.max_inflight_per_sender
    )
    wide = await chain_stage.sent_and_mined(
        chain_settings, distributor, args.chain_txs, args.chain_wide_window
    )
    return Stages(
        enqueue=enqueued,
        kafka_produce=produced,
        abi_encode=abi,
        signing=signing,
        rpc_block_number=block_number,
        rpc_send_raw=send_raw,
        block_interval=interval,
        kafka_consume=consumed,
        consumer_db=await db_stage.run(base, args.db_events, args.users, args.writers),
        chain=capped,
        chain_wide=wide,
    )


Run = Callable[[str, int, int, float], Awaitable[EndToEnd]]


async def _end_to_end(args: argparse.Namespace, result: Report, run: Run) -> None:
    """Burst runs, then a sustained run at half the best burst's rate (unless --rate
    says otherwise) with the best burst's consumers, then the long memory run."""
    if "burst" in args.modes:
        for consumers in args.consumers:
            result.end_to_end.append(await run("burst", consumers, args.events, 0.0))
    if "sustained" in args.modes:
        best = summary.best_burst(result.end_to_end)
        rate = args.rate or (best.throughput.per_second / 2 if best else 0.0)
        if rate <= 0:
            raise SettingsError("sustained mode: give --rate, or run burst mode too")
        consumers = args.sustained_consumers or (best.consumers if best else 1)
        events = max(1, round(rate * args.sustained_s))
        result.end_to_end.append(await run("sustained", consumers, events, rate))
    if "memory" in args.modes:
        result.end_to_end.append(
            await run("memory", args.memory_consumers, args.memory_events, args.rate)
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m tokendist.bench.run``."""
    return execute(options.parse_args(argv))


def execute(args: argparse.Namespace) -> int:
    """``tokendist bench``: the arguments as ``options`` defines them."""
    # The in-process relay logs every batch; the report is the output here.
    logs.configure("WARNING")
    try:
        result = asyncio.run(bench(args, load_settings()))
    except SettingsError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except TransientError as exc:
        # A service of the shared stack went away mid-run (someone restarted it): the
        # run is void; the databases were dropped on the way out. Try again later.
        print(f"bench: the stack became unavailable: {exc}", file=sys.stderr)
        return 3
    figures = json.dumps(dataclasses.asdict(result), default=str)
    if args.json is not None:
        args.json.write_text(figures + "\n")
    print(report.render(result))
    print(figures)  # last, on one line: what scripts read
    runs: list[EndToEnd | ChurnResult] = [*result.end_to_end, *result.churn]
    good = all(r.verified and not r.timed_out for r in runs)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
