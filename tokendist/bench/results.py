"""What the benchmark measured, as plain data (rendered by ``report``, dumped as JSON).

Durations are measured with ``time.perf_counter`` or taken from PostgreSQL timestamps;
latencies are whole milliseconds, memory whole KiB.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` operations in ``seconds``."""

    what: str
    count: int
    seconds: float
    per_second: float

    @classmethod
    def of(cls, what: str, count: int, seconds: float) -> Rate:
        return cls(what, count, seconds, count / seconds if seconds > 0 else 0.0)


@dataclass(frozen=True, slots=True)
class SignerRate:
    """Batch transactions signed one after another by one custody (``tokendist.custody``);
    no rate, and why in ``note``, when that custody is not configured."""

    custody: str
    rate: Rate | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Milliseconds over ``n`` events; None when no event got that far."""

    n: int
    p50_ms: int | None
    p90_ms: int | None
    p95_ms: int | None
    p99_ms: int | None
    max_ms: int | None
    mean_ms: int | None


@dataclass(frozen=True, slots=True)
class ChainRate:
    """Payments in signed ``distributeBatch`` transactions sent and mined, at most
    ``window`` transactions unmined (keys x in-flight cap)."""

    rate: Rate  # payments
    window: int
    batches: int
    batch_size: int
    gas_per_payment: int  # receipts' gasUsed over the payments they paid
    mean_ms: int  # sign → receipt seen, per transaction


@dataclass(frozen=True, slots=True)
class BlockInterval:
    blocks: int
    seconds: float
    interval_ms: int


@dataclass(frozen=True, slots=True)
class Stages:
    """Raw speed of each stage on its own, measured beside the pipeline."""

    enqueue: Rate
    kafka_produce: Rate
    abi_encode: Rate
    signing: Rate
    rpc_block_number: Rate
    rpc_send_raw: Rate
    # The baselines an end-to-end run is compared with (issue 7), besides its chain's.
    kafka_consume: Rate
    consumer_db: Rate  # Processor.handle → gatherer → settler, a stub chain: intake included
    db_batches: Rate  # the batch path alone: sign_batch → submitted → confirmed → credit
    signers: tuple[SignerRate, ...] = ()  # signing rate per key custody

    def baselines(self) -> dict[str, float]:
        """Events/s of each chain-independent stage the pipeline chains together, by name."""
        return {
            "kafka_consume": self.kafka_consume.per_second,
            "consumer_db": self.consumer_db.per_second,
        }


@dataclass(frozen=True, slots=True)
class StandardGas:
    """The chain stage's two runs on another token standard than the pipeline's ERC-20
    (``--standards``): the same batches, recipients and Distributor, its own token."""

    standard: str  # erc3643: a T-REX suite, every recipient a verified identity
    new_holders: ChainRate
    existing_holders: ChainRate


@dataclass(frozen=True, slots=True)
class ChainStages:
    """One chain of the benchmark's own (one block time) and its stages alone."""

    block_time_s: float
    block_interval: BlockInterval
    block_gas_limit: int
    new_holders: ChainRate  # recipients holding nothing yet
    existing_holders: ChainRate  # the same recipients again
    standards: list[StandardGas] = field(default_factory=list)  # besides the ERC-20

    @property
    def ceiling_per_s(self) -> float:
        """What the chain can physically take: one block's gas ÷ gas per payment to a new
        holder ÷ the block time."""
        gas = self.new_holders.gas_per_payment
        return self.block_gas_limit / gas / self.block_time_s if gas else 0.0


@dataclass(frozen=True, slots=True)
class RelayResult:
    published: Rate
    startup_ms: int  # from Relay.run() to the first batch claimed (connect, lock, producer)
    batch_size: int


@dataclass(frozen=True, slots=True)
class LagVerdict:
    """Consumer-group lag sampled while load was offered (see ``watch.lag_verdict``)."""

    samples: int
    max_lag: int
    middle_third_mean: float
    last_third_mean: float
    end_lag: int  # when the payment service stopped confirming
    slope_per_s: float  # least-squares growth of the lag, records per second
    bounded: bool


@dataclass(frozen=True, slots=True)
class MemoryPoint:
    """Resident memory of every process at one moment of a run."""

    label: str  # "ready" (before any payment), "10%", "50%", "100%" of events credited
    seconds: float  # since the first payment was confirmed
    credited: int
    rss_kib: dict[str, int | None]  # by process: "relay", "consumer-0", ...


@dataclass(frozen=True, slots=True)
class EndToEnd:
    mode: str  # "burst", "sustained" or "memory"
    block_time_s: float  # of the chain it ran on
    ceiling_per_s: float  # that chain's ``ChainStages.ceiling_per_s``
    consumers: int
    events: int
    users: int
    rate: float  # requested confirmations/s; 0 = one burst
    credited: int
    failed: int
    confirm: Rate  # how fast the stand-in payment service confirmed the burst
    throughput: Rate  # first confirmation → last credit, from PostgreSQL timestamps
    latency: Percentiles  # credited_at - confirmed_at
    segments: dict[str, Percentiles]  # the same latency cut at each recorded step
    in_flight: Percentiles  # signed → credited: what the in-flight cap counts
    max_inflight: int  # settings.max_inflight_per_sender x keys: batches on the chain at once
    blocks: int  # distinct blocks holding our batches
    batches: int  # distinct batches that paid the credited payments
    consumer_peak_rss_kib: list[int | None]
    relay_peak_rss_kib: int | None
    lag: LagVerdict
    memory: list[MemoryPoint]
    memory_growth_pct: dict[str, float | None]  # by process, from the 10% point to the end
    profile: dict[str, list[tuple[str, float]]]  # by consumer: hottest frames, % of samples
    verified: bool  # `tokendist verify` invariants held afterwards
    verify_report: str
    timed_out: bool


@dataclass(frozen=True, slots=True)
class ChurnResult:
    """Credited/s with one member SIGKILLed and restarted every ``every_s`` against
    credited/s without faults (goal: ratio ≥ 0.5), and the stall each kill caused (goal
    under static membership: at most 2 s). See ``bench.churn``."""

    membership: str  # "static" (an instance id per member) or "dynamic"
    consumers: int
    events: int  # per phase
    every_s: float
    baseline: Rate
    churned: Rate
    ratio: float
    kills: int
    stall_median_ms: int | None
    stall_max_ms: int | None
    verified: bool
    timed_out: bool


@dataclass(frozen=True, slots=True)
class Environment:
    cpus: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    settings: dict[str, object]
    log_dir: str


@dataclass(frozen=True, slots=True)
class Versus:
    """One end-to-end run against the slowest baseline of its chain and against that
    chain's ceiling (goal: at least half the ceiling)."""

    mode: str
    block_time_s: float
    consumers: int
    events: int
    events_per_s: float
    slowest_stage: str
    slowest_per_s: float
    ratio: float  # to the slowest baseline
    ceiling_per_s: float
    ceiling_ratio: float


@dataclass(slots=True)
class Report:
    environment: Environment
    stages: Stages
    relay: RelayResult
    chains: list[ChainStages] = field(default_factory=list)
    end_to_end: list[EndToEnd] = field(default_factory=list)
    churn: list[ChurnResult] = field(default_factory=list)
    versus: list[Versus] = field(default_factory=list)
    goals: dict[str, bool | None] = field(default_factory=dict)
    # Issue 14's figures at a glance (``summary.headline``): gas per payment to a new and to
    # an existing holder, and each burst's events/s beside its ceiling.
    headline: dict[str, object] = field(default_factory=dict)
