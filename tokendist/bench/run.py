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
    anvil,
    chain_stage,
    churn,
    db_stage,
    e2e,
    options,
    relay_stage,
    report,
    sandbox,
    signers,
    stages,
    summary,
    workload,
)
from tokendist.bench.results import (
    ChainStages,
    ChurnResult,
    EndToEnd,
    Environment,
    Rate,
    RelayResult,
    Report,
    SignerRate,
    Stages,
    StandardGas,
)
from tokendist.core import db, logs
from tokendist.core.errors import TransientError
from tokendist.core.settings import Settings, SettingsError, load_settings

# Sizes of the raw-stage samples: each takes a second or two on a small machine.
SIGN_PAYMENTS = 20_000
BLOCK_NUMBER_CALLS = 500
SEND_RAW_CALLS = 200
BLOCK_WATCH_S = 3.0
# Modes run on the first chain only: one long run, and a fault drill, are enough.
FIRST_CHAIN_ONLY = ("memory", "churn")


def settings_summary(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    names = (
        "topic_partitions",
        "relay_batch_size",
        "max_inflight_per_sender",
        "batch_max_size",
        "batch_max_wait_s",
        "receipt_poll_s",
        "max_partition_buffer",
    )
    return {
        **{n: getattr(settings, n) for n in names},
        "finality": str(settings.finality_rule),
        "keys": args.keys,
        "log_level": args.service_log_level,
    }


@dataclasses.dataclass(frozen=True, slots=True)
class ChainFree:
    """The stages that need no node, measured once."""

    enqueued: Rate
    relayed: RelayResult
    kafka_produce: Rate
    kafka_consume: Rate
    consumer_db: Rate
    db_batches: Rate
    signers: tuple[SignerRate, ...]


async def bench(args: argparse.Namespace, shared: Settings, anvil_binary: str) -> Report:
    run_id = uuid.uuid4().hex[:10]
    base = sandbox.bench_settings(shared, run_id)
    log_dir = Path(tempfile.mkdtemp(prefix=f"tokendist-bench-{run_id}-"))
    load_before = os.getloadavg()
    topics: list[str] = []

    def named(settings: Settings, suffix: str) -> Settings:
        s = sandbox.renamed(settings, suffix)
        topics.extend([s.topic, s.dlq_topic])
        return s

    try:
        free = await _chain_free(args, base, named)
        result: Report | None = None
        for block_time in args.block_times:
            log = log_dir / f"anvil-{block_time:g}s.log"
            async with anvil.started(anvil_binary, block_time, log) as rpc_url:
                on_chain = await sandbox.on_chain(base, rpc_url)
                if result is None:
                    result = Report(
                        environment=Environment(
                            cpus=os.cpu_count() or 0,
                            load_before=load_before,
                            load_after=load_before,  # replaced once everything ran
                            settings=settings_summary(base, args),
                            log_dir=str(log_dir),
                        ),
                        stages=await _stages(on_chain, free),
                        relay=free.relayed,
                    )
                chain = await _chain(args, on_chain, block_time)
                result.chains.append(chain)
                first = block_time == args.block_times[0]
                runner = _Runner(args, on_chain, chain, log_dir, named)
                await _end_to_end(args, result, runner, first=first)
                for membership in args.churn_membership if first and "churn" in args.modes else []:
                    result.churn.append(await runner.churned(membership))
    finally:
        await sandbox.delete_topics(base, topics)
    assert result is not None  # --block-times is never empty
    summary.compare(result)
    result.environment = dataclasses.replace(result.environment, load_after=os.getloadavg())
    return result


Named = Callable[[Settings, str], Settings]


class _Runner:
    """Runs on one chain: each with a database and keys of its own."""

    def __init__(
        self,
        args: argparse.Namespace,
        settings: Settings,
        chain: ChainStages,
        log_dir: Path,
        named: Named,
    ) -> None:
        self.args = args
        self.settings = settings
        self.chain = chain
        self.log_dir = log_dir
        self.named = named

    def _tag(self, name: str) -> str:
        return f"{self.chain.block_time_s:g}s-{name}"

    async def run(self, mode: str, consumers: int, events: int, rate: float) -> EndToEnd:
        args = self.args
        load = e2e.Load(
            mode=mode,
            block_time_s=self.chain.block_time_s,
            ceiling_per_s=self.chain.ceiling_per_s,
            events=events,
            wallets=workload.make_wallets(args.users),
            writers=args.writers,
            rate=rate,
            timeout_s=args.timeout or 600 + events / 2,
            log_dir=self.log_dir,
            log_level=args.service_log_level,
            profile=args.profile and mode == "burst",
        )
        return await _isolated(
            self.named(self.settings, self._tag(f"{mode}-c{consumers}")),
            args.keys,
            load.wallets,
            load.writers,
            lambda own, pool: e2e.run(own, pool, consumers, load),
        )

    async def churned(self, membership: str) -> ChurnResult:
        args = self.args
        load = churn.Load(
            membership=membership,
            consumers=args.churn_consumers,
            events=args.churn_events,
            every_s=args.churn_every_s,
            churn_s=args.churn_s,
            wallets=workload.make_wallets(args.users),
            writers=args.writers,
            timeout_s=args.timeout or 300 + args.churn_s + args.churn_events,
            log_dir=self.log_dir,
            log_level=args.service_log_level,
        )
        return await _isolated(
            self.named(self.settings, self._tag(f"churn-{membership}")),
            args.keys,
            load.wallets,
            load.writers,
            lambda own, pool: churn.run(own, pool, load),
        )


async def _chain_free(args: argparse.Namespace, base: Settings, named: Named) -> ChainFree:
    """The relay in a database of its own, Kafka alone, the consumer's DB work alone."""
    relay_settings = named(base, "relay")
    async with sandbox.isolated_database(relay_settings.database_url) as url:
        pool = await db.create_pool(url, max_size=args.writers + 4)
        try:
            enqueued, relayed = await relay_stage.run(
                relay_settings.in_database(url),
                pool,
                args.relay_rows,
                args.writers,
            )
        finally:
            await pool.close()
    kafka_settings = named(base, "kafka")
    sample = workload.payment(None, "sample", 0, workload.make_wallets(1)).event()
    payload = sample.model_dump_json().encode()
    produced = await stages.kafka_produce(kafka_settings, args.relay_rows, payload)
    consumed = await stages.kafka_consume(kafka_settings, len(payload))
    return ChainFree(
        enqueued=enqueued,
        relayed=relayed,
        kafka_produce=produced,
        kafka_consume=consumed,
        consumer_db=await db_stage.consumer_path(base, args.db_events, args.users, args.writers),
        db_batches=await db_stage.batch_path(base, args.db_events, args.users, args.writers),
        # The environment's KMS settings: the chains' settings carry the benchmark's keys only.
        signers=await signers.rates(base),
    )


T = TypeVar("T")


async def _isolated(
    settings: Settings,
    keys: int,
    wallets: list[str],
    writers: int,
    body: Callable[[Settings, asyncpg.Pool], Awaitable[T]],
) -> T:
    """``body`` with a database and ``keys`` operator keys of its own: a run cut short by
    its timeout leaves nothing that the next run's ``verify`` would count."""
    own = await sandbox.with_keys(settings, keys)
    async with sandbox.isolated_database(settings.database_url) as url:
        pool = await db.create_pool(url, max_size=writers + 4)
        try:
            await workload.register_users(pool, wallets)
            return await body(own.in_database(url), pool)
        finally:
            await pool.close()


async def _stages(settings: Settings, free: ChainFree) -> Stages:
    """The chain-free stages, and the CPU and round trips of the first chain's node."""
    abi, signing = await stages.chain_cpu(settings, SIGN_PAYMENTS)
    return Stages(
        enqueue=free.enqueued,
        kafka_produce=free.kafka_produce,
        abi_encode=abi,
        signing=signing,
        rpc_block_number=await stages.rpc_block_number(settings, BLOCK_NUMBER_CALLS),
        rpc_send_raw=await stages.rpc_send_raw(settings, SEND_RAW_CALLS),
        kafka_consume=free.kafka_consume,
        consumer_db=free.consumer_db,
        db_batches=free.db_batches,
        signers=free.signers,
    )


async def _chain(args: argparse.Namespace, settings: Settings, block_time: float) -> ChainStages:
    """The chain alone at one block time: the same recipients paid twice, first as new
    holders, then as existing ones (fresh payment ids and indices each time)."""
    # Long enough to see a few blocks at any block time.
    interval = await stages.block_interval(settings, max(BLOCK_WATCH_S, 3.5 * block_time))
    stage = await chain_stage.deploy(settings, args.keys)
    recipients = workload.make_wallets(args.chain_payments)
    new = await chain_stage.sent_and_mined(stage, "new holders", recipients, 0)
    existing = await chain_stage.sent_and_mined(
        stage, "existing holders", recipients, len(recipients)
    )
    others = []
    if "erc3643" in args.standards:
        trex = await chain_stage.deploy_trex(settings, args.keys, recipients)
        others.append(
            StandardGas(
                standard="erc3643",
                new_holders=await chain_stage.sent_and_mined(
                    trex, "T-REX new holders", recipients, 0
                ),
                existing_holders=await chain_stage.sent_and_mined(
                    trex, "T-REX existing holders", recipients, len(recipients)
                ),
            )
        )
    rpc_url, _ = settings.require_chain()
    return ChainStages(
        block_time_s=block_time,
        block_interval=interval,
        block_gas_limit=await sandbox.block_gas_limit(rpc_url),
        new_holders=new,
        existing_holders=existing,
        standards=others,
    )


async def _end_to_end(
    args: argparse.Namespace, result: Report, runner: _Runner, *, first: bool
) -> None:
    """Burst runs, then a sustained run at half the best burst's rate on this chain
    (unless --rate says otherwise) with that burst's consumers, then (first chain only)
    the long memory run."""
    here = runner.chain.block_time_s
    if "burst" in args.modes:
        for consumers in args.consumers:
            result.end_to_end.append(await runner.run("burst", consumers, args.events, 0.0))
    if "sustained" in args.modes:
        best = summary.best_burst([r for r in result.end_to_end if r.block_time_s == here])
        rate = args.rate or (best.throughput.per_second / 2 if best else 0.0)
        if rate <= 0:
            raise SettingsError("sustained mode: give --rate, or run burst mode too")
        consumers = args.sustained_consumers or (best.consumers if best else 1)
        events = max(1, round(rate * args.sustained_s))
        result.end_to_end.append(await runner.run("sustained", consumers, events, rate))
    if first and "memory" in args.modes:
        result.end_to_end.append(
            await runner.run("memory", args.memory_consumers, args.memory_events, args.rate)
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m tokendist.bench.run``."""
    return execute(options.parse_args(argv))


def execute(args: argparse.Namespace) -> int:
    """``tokendist bench``: the arguments as ``options`` defines them."""
    # The in-process relay logs every batch; the report is the output here.
    logs.configure("WARNING")
    try:
        binary = anvil.find_binary(args.anvil, os.environ.get("TOKENDIST_STACK_DIR"))
        result = asyncio.run(bench(args, load_settings(), binary))
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
