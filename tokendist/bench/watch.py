"""What an end-to-end run looks like while it runs: consumer-group lag and the resident
memory of every process, sampled once a second, and the verdicts drawn from them.

The verdicts are pure functions of the samples, so they are unit-tested without a stack.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from tokendist.bench import queries
from tokendist.bench.procs import Service, check_alive
from tokendist.bench.results import LagVerdict, MemoryPoint
from tokendist.core.settings import Settings
from tokendist.ops.status import KafkaOffsets

POLL_S = 0.25  # how late the end of a run is seen
SAMPLE_S = 1.0
# Lag below this many seconds of arrivals is the pipeline's normal work in hand (events
# being processed, offsets committed every 0.5 s), not a backlog.
LAG_FLOOR_S = 2.0
# A last third of the run whose mean lag exceeds the middle third's by more than this
# fraction is a backlog that grows.
LAG_GROWTH_TOLERANCE = 0.25
MEMORY_FRACTIONS = (0.1, 0.5)
GROWTH_BASE = "10%"  # growth is measured from here: before it, the processes warm up


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float  # since the first payment was confirmed
    offering: bool  # the payment service was still confirming payments
    credited: int
    lag: int
    rss_kib: dict[str, int | None]


def lag_verdict(samples: list[Sample], rate: float) -> LagVerdict:
    """Bounded when the mean lag over the last third of the offered load is no more than
    ``LAG_GROWTH_TOLERANCE`` above the middle third's (the first third is the ramp from
    zero), or under ``LAG_FLOOR_S`` of arrivals. Means, not peaks: one slow block makes
    a spike, a backlog that grows lifts the whole last third."""
    offered = [s for s in samples if s.offering]
    if not offered:
        return LagVerdict(0, 0, 0.0, 0.0, 0, 0.0, bounded=True)
    lags = [s.lag for s in offered]
    third = len(lags) // 3
    middle = _mean(lags[third : 2 * third] or lags)
    last = _mean(lags[2 * third :])
    floor = rate * LAG_FLOOR_S
    # Too few samples to see a trend (a burst offered in a second): only the floor rules.
    growing = last > middle * (1 + LAG_GROWTH_TOLERANCE) if third else max(lags) > floor
    return LagVerdict(
        samples=len(offered),
        max_lag=max(lags),
        middle_third_mean=middle,
        last_third_mean=last,
        end_lag=lags[-1],
        slope_per_s=_slope([s.seconds for s in offered], lags),
        bounded=not growing or last <= floor,
    )


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)


def _slope(xs: list[float], ys: list[int]) -> float:
    """Least-squares slope of ys over xs (0 when it is undefined)."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


def memory_points(
    ready: Sample, samples: list[Sample], end: Sample, events: int
) -> list[MemoryPoint]:
    """RSS before any payment, at the first sample past each of ``MEMORY_FRACTIONS`` of the
    events credited, and at the end (every event credited, processes still running)."""
    points = [_point("ready", ready)]
    for fraction in MEMORY_FRACTIONS:
        reached = next((s for s in samples if s.credited >= fraction * events), None)
        if reached is not None:
            points.append(_point(f"{fraction:.0%}", reached))
    points.append(_point("100%", end))
    return points


def _point(label: str, s: Sample) -> MemoryPoint:
    return MemoryPoint(label, round(s.seconds, 1), s.credited, s.rss_kib)


def memory_growth(points: list[MemoryPoint]) -> dict[str, float | None]:
    """Percent growth of each process's RSS from the ``GROWTH_BASE`` point to the end."""
    base = next((p for p in points if p.label == GROWTH_BASE), None)
    end = points[-1]
    growth: dict[str, float | None] = {}
    for name, last in end.rss_kib.items():
        first = None if base is None else base.rss_kib.get(name)
        growth[name] = None if not first or last is None else 100 * (last - first) / first
    return growth


class Watch:
    """Waits for a run to finish while sampling it; the samples stay in memory (one per
    second: a 200,000-event run at 25 events/s keeps ~8,000 small tuples). Entered as a
    context: its Kafka client stays open for the run (it reads offsets, joins no group)."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        tokenization_id: str,
        services: dict[str, Service],
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.tokenization_id = tokenization_id
        self.services = services
        self.samples: list[Sample] = []
        self.started = time.monotonic()
        self._offsets = KafkaOffsets(settings)

    async def __aenter__(self) -> Watch:
        await self._offsets.__aenter__()
        self.started = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._offsets.__aexit__(*exc)

    async def sample(self, *, offering: bool) -> Sample:
        lag = sum((await self._offsets.lag()).values())
        credited, _ = await self.outcomes()
        return Sample(
            seconds=time.monotonic() - self.started,
            offering=offering,
            credited=credited,
            lag=lag,
            rss_kib={name: s.rss_kib() for name, s in self.services.items()},
        )

    async def outcomes(self) -> tuple[int, int]:
        row = await self.pool.fetchrow(queries.OUTCOMES, self.tokenization_id)
        assert row is not None
        return row["credited"], row["failed"]

    async def until_finished(
        self, confirming: asyncio.Task[float], events: int, deadline: float
    ) -> bool:
        """Until every event is credited or failed; False when the deadline came first
        (the report then shows how far it got instead of hanging). A payment service that
        failed, or a service that died, ends the run with their error."""
        next_sample = time.monotonic()
        services = list(self.services.values())
        while True:
            check_alive(services)
            if confirming.done():
                confirming.result()
            if time.monotonic() >= next_sample:
                self.samples.append(await self.sample(offering=not confirming.done()))
                next_sample += SAMPLE_S
            credited, failed = await self.outcomes()
            if credited + failed >= events:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_S)
