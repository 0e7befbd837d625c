"""The figures issue 7 sets goals on, drawn from a finished report: each end-to-end
run against the slowest stage baseline, and whether each goal is met.

Goals (for the optimisation work, not enforced anywhere): end-to-end events/s at least
``RATIO_GOAL`` x the slowest baseline; p99 latency under ``P99_GOAL_MS`` at the
sustained (half the maximum) rate; RSS growth at most ``GROWTH_GOAL_PCT`` over the
memory run; under member churn with static membership (issue 12), credited/s at least
``CHURN_RATIO_GOAL`` x without faults and every kill's stall at most
``CHURN_STALL_GOAL_MS``. A goal whose run was not made is None.
"""

from __future__ import annotations

from tokendist.bench.results import EndToEnd, Report, Versus

RATIO_GOAL = 0.5
P99_GOAL_MS = 1000
GROWTH_GOAL_PCT = 10.0
CHURN_RATIO_GOAL = 0.5  # credited/s under churn against without faults (issue 12)
CHURN_STALL_GOAL_MS = 2000  # kill + restart → its partitions progress, static membership


def best_burst(runs: list[EndToEnd]) -> EndToEnd | None:
    bursts = [r for r in runs if r.mode == "burst"]
    return max(bursts, key=lambda r: r.throughput.per_second, default=None)


def compare(report: Report) -> None:
    """Fill in the report's slowest baseline, each run's ratio to it, and the goals."""
    name, per_s = min(report.stages.baselines().items(), key=lambda item: item[1])
    report.slowest_stage, report.slowest_per_s = name, per_s
    report.versus = [
        Versus(
            mode=r.mode,
            consumers=r.consumers,
            events_per_s=r.throughput.per_second,
            ratio=r.throughput.per_second / per_s if per_s > 0 else 0.0,
        )
        for r in report.end_to_end
        if not r.rate  # a paced run's events/s is its offered rate, not its capacity
    ]
    report.goals = goals(report)


def goals(report: Report) -> dict[str, bool | None]:
    bursts = [v for v in report.versus if v.mode == "burst"]
    sustained = [r for r in report.end_to_end if r.mode == "sustained"]
    memory = [r for r in report.end_to_end if r.mode == "memory"]
    static = [r for r in report.churn if r.membership == "static"]
    return {
        f"throughput ≥ {RATIO_GOAL} x slowest baseline": (
            max(v.ratio for v in bursts) >= RATIO_GOAL if bursts else None
        ),
        f"sustained p99 < {P99_GOAL_MS} ms and lag bounded": (
            all(
                r.latency.p99_ms is not None and r.latency.p99_ms < P99_GOAL_MS and r.lag.bounded
                for r in sustained
            )
            if sustained
            else None
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
