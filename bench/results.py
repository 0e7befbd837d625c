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
class Percentiles:
    """Milliseconds over ``n`` events; None when no event got that far."""

    n: int
    p50_ms: int | None
    p90_ms: int | None
    p99_ms: int | None
    max_ms: int | None
    mean_ms: int | None


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
    block_interval: BlockInterval


@dataclass(frozen=True, slots=True)
class RelayResult:
    published: Rate
    startup_ms: int  # from Relay.run() to the first batch claimed (connect, lock, producer)
    batch_size: int


@dataclass(frozen=True, slots=True)
class EndToEnd:
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
    max_inflight: int  # settings.max_inflight_per_sender
    blocks: int  # distinct blocks holding our distribute calls
    consumer_peak_rss_kib: list[int | None]
    relay_peak_rss_kib: int | None
    verified: bool  # `tokendist verify` invariants held afterwards
    verify_report: str
    timed_out: bool


@dataclass(frozen=True, slots=True)
class Environment:
    cpus: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    settings: dict[str, object]
    log_dir: str


@dataclass(slots=True)
class Report:
    environment: Environment
    stages: Stages
    relay: RelayResult
    end_to_end: list[EndToEnd] = field(default_factory=list)
