"""One fault run, start to verdict.

1. plan: every random choice is drawn up front from ``Random(seed)`` (workload, fleet
   size, fault kinds and instants, and a private rng per fault), so a seed names a plan;
2. world: isolated database, topic, group, keys, contracts;
3. act: the payment stream, the KYC approvals and the nemesis run concurrently;
4. restore every service and the fleet, approve whoever is still pending, wait until quiet;
5. stop the fleet, count lost / doubled from independent records, run ``verify``.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults import checker, nemesis
from tests.faults.context import Ctx
from tests.faults.members import Fleet
from tests.faults.sandbox import create_world, destroy_world
from tests.faults.stack import Stack
from tests.faults.workload import Investor, Workload
from tests.integration import harness

GAP_S = 0.3  # mean pause between two payments of the stream
FAULT_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Options:
    payments: int = 30
    max_faults: int = 4
    quiesce_timeout_s: float = 120.0
    kinds: tuple[str, ...] = ()  # empty: every kind the stack supports
    # Seed s always features kinds[s % len(kinds)]: consecutive seeds cover every kind
    # (a short campaign would otherwise leave some to luck).
    rotate: bool = False
    # Every run includes this kind: a campaign about one nemesis, the others beside it.
    feature: str | None = None
    log_root: Path = Path("/tmp/tokendist-faults")  # noqa: S108 -- only logs, per run dirs
    keep_passing: bool = False
    standard: str = "erc20"  # or "erc3643": a T-REX suite, investors approved on-chain

    def replay_args(self, seed: int, brokers: int) -> str:
        args = f"--seed {seed} --runs 1 --brokers {brokers} --payments {self.payments}"
        args += f" --max-faults {self.max_faults} --quiesce-timeout {self.quiesce_timeout_s:g}"
        if self.kinds:
            args += f" --kinds {','.join(self.kinds)}"
        if self.rotate:
            args += " --rotate"
        if self.feature:
            args += f" --feature {self.feature}"
        if self.standard != "erc20":
            args += f" --standard {self.standard}"
        return args


@dataclass
class RunResult:
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    metrics: Counter[str] = field(default_factory=Counter)
    tally: checker.Tally = field(default_factory=checker.Tally)
    verify_ok: bool = False
    verify_report: str = ""
    outstanding: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    journal: list[str] = field(default_factory=list)
    error: str | None = None
    log_dir: str = ""
    database: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        t = self.tally
        return (
            self.error is None
            and not self.outstanding
            and self.verify_ok
            and t.lost == 0
            and t.doubled == 0
            and t.wrong == 0
        )

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "ERROR"
        return "pass" if self.ok else "FAIL"


@dataclass(frozen=True)
class Plan:
    workload: Workload
    relays: int
    consumers: int
    steps: list[tuple[float, str, random.Random]]  # (instant, fault kind, its own rng)
    gaps: list[float]
    approvals: list[tuple[float, Investor]]
    fund: int | None


def make_plan(
    rng: random.Random, name: str, kinds: list[str], opts: Options, featured: str | None
) -> Plan:
    workload = Workload.plan(rng, name, (f"tok-{name}", f"prop-{name}"), opts.payments)
    relays = rng.choice((1, 1, 2))  # sometimes a standby waits on the advisory lock
    consumers = rng.randint(1, 3)
    gaps = [rng.uniform(0, 2 * GAP_S) for _ in workload.payments]
    window = max(sum(gaps), 6.0)
    steps: list[tuple[float, str, random.Random]] = []
    for i in range(rng.randint(1, opts.max_faults)):
        kind = featured if i == 0 and featured is not None else rng.choice(kinds)
        if kind in nemesis.ONCE and any(k == kind for _, k, _ in steps):
            continue
        low = 0.6 * window if kind in nemesis.LATE else 0.0
        steps.append((rng.uniform(low, window), kind, random.Random(rng.getrandbits(64))))
    steps.sort(key=lambda s: s[0])
    approvals = [(rng.uniform(0, 1.2 * window), u) for u in workload.investors if u.kyc_pending]
    short = any(k == "out_of_tokens" for _, k, _ in steps)
    fund = int(workload.total_tokens() * rng.uniform(0.25, 0.6)) if short else None
    return Plan(workload, relays, consumers, steps, gaps, approvals, fund)


async def _at(ctx: Ctx, instant: float) -> None:
    await asyncio.sleep(max(0.0, ctx.started + instant - time.monotonic()))


async def _stream(ctx: Ctx, gaps: list[float]) -> None:
    for payment, gap in zip(ctx.workload.payments, gaps, strict=True):
        await asyncio.sleep(gap)
        await ctx.workload.deliver(ctx.world.pool, payment)


async def _nemesis(ctx: Ctx, steps: list[tuple[float, str, random.Random]]) -> None:
    # One fault at a time, like Jepsen's nemesis; the workload goes on meanwhile.
    for instant, kind, rng in steps:
        await _at(ctx, instant)
        ctx.faults[kind] += 1
        ctx.note(f"fault {kind}")
        await asyncio.wait_for(nemesis.FAULTS[kind](ctx, rng), timeout=FAULT_TIMEOUT_S)


async def _approvals(ctx: Ctx, approvals: list[tuple[float, Investor]]) -> None:
    for instant, investor in sorted(approvals, key=lambda a: a[0]):
        await _at(ctx, instant)
        released = await ctx.workload.approve(ctx.world.pool, investor)
        ctx.note(f"KYC approved {investor.id}: {released} parked distributions released")


async def _restore(ctx: Ctx) -> None:
    ctx.fleet.restore(ctx.relays, ctx.consumers)
    for investor in ctx.workload.pending:
        released = await ctx.workload.approve(ctx.world.pool, investor)
        ctx.note(f"KYC approved {investor.id} at restore: {released} released")
    if ctx.tokens_short:
        await nemesis.top_up_and_redrive(ctx)


async def run_once(stack: Stack, seed: int, opts: Options) -> RunResult:
    began = time.monotonic()
    result = RunResult(seed=seed)
    rng = random.Random(seed)
    kinds = list(opts.kinds) or nemesis.available(stack.brokers)
    name = f"s{seed}"
    featured = kinds[seed % len(kinds)] if opts.rotate else opts.feature
    plan = make_plan(rng, name, kinds, opts, featured)
    tag = f"{name}_{uuid.uuid4().hex[:6]}"  # a replay must not collide with a kept failure
    try:
        world = await create_world(
            stack,
            tag,
            (f"tok-{name}", f"prop-{name}"),
            fund=plan.fund,
            log_root=opts.log_root,
            standard=opts.standard,
        )
        plan.workload.trex = world.trex
    except Exception:  # one run's setup failing must not end the whole campaign
        result.error = "setting up the run's world failed:\n" + traceback.format_exc(limit=8)
        result.seconds = time.monotonic() - began
        return result
    result.log_dir, result.database = str(world.log_dir), world.db_name
    fleet = Fleet(world.settings, world.log_dir)
    ctx = Ctx(
        rng=rng,
        stack=stack,
        world=world,
        fleet=fleet,
        workload=plan.workload,
        relays=plan.relays,
        consumers=plan.consumers,
        tokens_short=plan.fund is not None,
    )
    try:
        await _act(ctx, plan, opts, result)
    except Exception:
        result.error = traceback.format_exc(limit=8)
    finally:
        await fleet.shutdown()
        result.faults, result.metrics = ctx.faults, ctx.metrics
        result.anomalies, result.journal = fleet.anomalies, ctx.journal
        result.metrics["member_error_exits"] += len(fleet.error_exits)
        await destroy_world(
            world, keep=not result.ok or opts.keep_passing, keep_logs=bool(result.anomalies)
        )
        result.seconds = time.monotonic() - began
    return result


async def _act(ctx: Ctx, plan: Plan, opts: Options, result: RunResult) -> None:
    await plan.workload.register(ctx.world.pool)
    ctx.fleet.restore(plan.relays, plan.consumers)
    ctx.note(f"{plan.relays} relay(s), {plan.consumers} consumer(s), fund {plan.fund or 'plenty'}")
    # A TaskGroup, not gather: if one of them fails the others are cancelled, so no fault
    # outlives its run (each brings its service back in ``finally``, cancelled or not).
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(_stream(ctx, plan.gaps))
        tasks.create_task(_nemesis(ctx, plan.steps))
        tasks.create_task(_approvals(ctx, plan.approvals))
    ctx.note("faults over: restoring")
    await _restore(ctx)
    result.outstanding = await checker.wait_quiescent(ctx, opts.quiesce_timeout_s)
    ctx.note("quiet" if not result.outstanding else f"NOT quiet: {result.outstanding}")
    await ctx.fleet.shutdown()  # nothing moves while the books are read
    # A bump is a second attempt of one batch; a batch that reverted or was abandoned
    # puts its payments into later batches.
    txs = await ctx.world.pool.fetchrow(
        "SELECT (SELECT count(*) - count(DISTINCT batch_id) FROM chain_transactions) AS bumps,"
        " (SELECT count(*) FROM batches) AS batches,"
        " (SELECT count(*) FROM batches WHERE state IN ('reverted', 'abandoned')) AS redone"
    )
    assert txs is not None  # an aggregate always returns its row
    ctx.metrics["fee_bumps"] += txs["bumps"]
    ctx.metrics["batches"] += txs["batches"]
    ctx.metrics["batches_reverted_or_abandoned"] += txs["redone"]
    result.tally = await checker.tally(ctx)
    report = await harness.run_verify(ctx.world.settings, ctx.world.pool, grace_s=0.0)
    result.verify_ok, result.verify_report = report.ok, report.render()
