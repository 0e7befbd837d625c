"""The figures issues 7 and 14 set goals on, drawn from a finished report: each
end-to-end run against the slowest stage baseline and the ceiling of its chain, whether
each goal is met, and the headline figures.

Goals (for the optimisation work, not enforced anywhere), issue 14's: gas per payment at
most ``GAS_NEW_GOAL`` to a new holder and ``GAS_EXISTING_GOAL`` to an existing one; a
burst on 2 s blocks at least ``BURST_2S_GOAL`` events/s and ``CEILING_RATIO_GOAL`` x its
ceiling, 3 consumers at least as fast as 1; on 0.25 s blocks at least
``BURST_QUARTER_S_GOAL``; p99 confirmation → credit at the sustained (half the best
burst) rate at most two block intervals + 1 s, lag bounded; RSS growth at most
``GROWTH_GOAL_PCT`` over the memory run. Issue 12's under member churn with static
membership: credited/s at least ``CHURN_RATIO_GOAL`` x without faults, every kill's stall
at most ``CHURN_STALL_GOAL_MS``. A goal whose run was not made is None.
"""

from __future__ import annotations

from tokendist.bench.results import ChainStages, EndToEnd, Report, Versus

GAS_NEW_GOAL = 30_000
GAS_EXISTING_GOAL = 12_000
BURST_2S_GOAL = 250.0
BURST_QUARTER_S_GOAL = 500.0
CEILING_RATIO_GOAL = 0.5
GROWTH_GOAL_PCT = 10.0
CHURN_RATIO_GOAL = 0.5  # credited/s under churn against without faults (issue 12)
CHURN_STALL_GOAL_MS = 2000  # kill + restart → its partitions progress, static membership


def best_burst(runs: list[EndToEnd]) -> EndToEnd | None:
    bursts = [r for r in runs if r.mode == "burst"]
    return max(bursts, key=lambda r: r.throughput.per_second, default=None)


def compare(report: Report) -> None:
    """Fill in each run's comparison with its chain's stages, the goals, the headline."""
    chains = {c.block_time_s: c for c in report.chains}
    report.versus = [
        _versus(report, chains[r.block_time_s], r)
        for r in report.end_to_end
        if not r.rate and r.block_time_s in chains  # a paced run's events/s is its offer
    ]
    report.goals = goals(report)
    report.headline = headline(report)


def _versus(report: Report, chain: ChainStages, r: EndToEnd) -> Versus:
    baselines = {**report.stages.baselines(), "chain": chain.new_holders.rate.per_second}
    name, slowest = min(baselines.items(), key=lambda item: item[1])
    per_s = r.throughput.per_second
    return Versus(
        mode=r.mode,
        block_time_s=r.block_time_s,
        consumers=r.consumers,
        events=r.events,
        events_per_s=per_s,
        slowest_stage=name,
        slowest_per_s=slowest,
        ratio=per_s / slowest if slowest > 0 else 0.0,
        ceiling_per_s=chain.ceiling_per_s,
        ceiling_ratio=per_s / chain.ceiling_per_s if chain.ceiling_per_s > 0 else 0.0,
    )


def headline(report: Report) -> dict[str, object]:
    """Issue 14's summary: gas per payment (the first chain's receipts; gas does not
    depend on the block time) and every burst beside its ceiling; issue 15's: batch
    transactions signed per second by each key custody (None: not configured)."""
    first = report.chains[0] if report.chains else None
    return {
        "signatures_per_s": {
            r.custody: round(r.rate.per_second, 1) if r.rate else None
            for r in report.stages.signers
        },
        "gas_new_holder": first.new_holders.gas_per_payment if first else None,
        "gas_existing_holder": first.existing_holders.gas_per_payment if first else None,
        # Issue 16's: the same for each other standard measured (``--standards``).
        **{
            f"gas_{g.standard}_{holder}": rate.gas_per_payment
            for g in (first.standards if first else [])
            for holder, rate in (
                ("new_holder", g.new_holders),
                ("existing_holder", g.existing_holders),
            )
        },
        "runs": [
            {
                "block_time_s": v.block_time_s,
                "consumers": v.consumers,
                "events": v.events,
                "events_per_s": round(v.events_per_s, 1),
                "ceiling_per_s": round(v.ceiling_per_s, 1),
            }
            for v in report.versus
            if v.mode == "burst"
        ],
    }


def _bursts(report: Report, block_time_s: float) -> list[Versus]:
    return [v for v in report.versus if v.mode == "burst" and v.block_time_s == block_time_s]


def _sustained_ok(report: Report, r: EndToEnd) -> bool:
    chain = next((c for c in report.chains if c.block_time_s == r.block_time_s), None)
    interval_ms = chain.block_interval.interval_ms if chain else 0
    limit_ms = 2 * (interval_ms or r.block_time_s * 1000) + 1000
    return r.latency.p99_ms is not None and r.latency.p99_ms <= limit_ms and r.lag.bounded


def goals(report: Report) -> dict[str, bool | None]:
    first = report.chains[0] if report.chains else None
    two_s = _bursts(report, 2.0)
    quarter_s = _bursts(report, 0.25)
    by_consumers = {v.consumers: v.events_per_s for v in two_s}
    sustained = [r for r in report.end_to_end if r.mode == "sustained"]
    memory = [r for r in report.end_to_end if r.mode == "memory"]
    static = [r for r in report.churn if r.membership == "static"]
    return {
        f"gas per payment ≤ {GAS_NEW_GOAL:,} new holder, ≤ {GAS_EXISTING_GOAL:,} existing": (
            first.new_holders.gas_per_payment <= GAS_NEW_GOAL
            and first.existing_holders.gas_per_payment <= GAS_EXISTING_GOAL
            if first
            else None
        ),
        f"2 s blocks: burst ≥ {BURST_2S_GOAL:g}/s and ≥ {CEILING_RATIO_GOAL} x ceiling": (
            all(
                v.events_per_s >= BURST_2S_GOAL and v.ceiling_ratio >= CEILING_RATIO_GOAL
                for v in two_s
            )
            if two_s
            else None
        ),
        "2 s blocks: 3 consumers at least as fast as 1": (
            by_consumers[3] >= by_consumers[1] if {1, 3} <= by_consumers.keys() else None
        ),
        f"0.25 s blocks: burst ≥ {BURST_QUARTER_S_GOAL:g}/s": (
            all(v.events_per_s >= BURST_QUARTER_S_GOAL for v in quarter_s) if quarter_s else None
        ),
        "sustained p99 ≤ 2 block intervals + 1 s and lag bounded": (
            all(_sustained_ok(report, r) for r in sustained) if sustained else None
        ),
        f"memory growth ≤ {GROWTH_GOAL_PCT:g}%": (
            all(
                g is not None and g <= GROWTH_GOAL_PCT
                for r in memory
                for g in r.memory_growth_pct.values()
            )
            if memory
            else None
        ),
        f"churn (static): credited/s ≥ {CHURN_RATIO_GOAL} x without faults": (
            all(r.ratio >= CHURN_RATIO_GOAL for r in static) if static else None
        ),
        f"churn (static): stall after a kill ≤ {CHURN_STALL_GOAL_MS} ms": (
            all(
                r.stall_max_ms is not None and r.stall_max_ms <= CHURN_STALL_GOAL_MS for r in static
            )
            if static
            else None
        ),
    }
