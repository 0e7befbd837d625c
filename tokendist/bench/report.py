"""The printed report: raw stage ceilings first, then the relay, then end to end with
the same latency cut per step, so a slow total can be traced to the step that holds it;
then each run against the slowest baseline, memory over the runs and the profiles."""

from __future__ import annotations

from tokendist.bench.results import (
    ChainRate,
    ChainStages,
    ChurnResult,
    EndToEnd,
    Percentiles,
    Rate,
    Report,
    SignerRate,
)

LABEL = 52


def render(report: Report) -> str:
    return "\n".join(
        [
            *_header(report),
            "",
            *_stages(report),
            *(line for chain in report.chains for line in ["", *_chain(chain)]),
            "",
            *_relay(report),
            *(["", *_end_to_end(report.end_to_end)] if report.end_to_end else []),
            *(["", *_churn(report.churn)] if report.churn else []),
            "",
            *_versus(report),
            *_memory(report.end_to_end),
            *_profiles(report.end_to_end),
            "",
            *_notes(report),
        ]
    )


def _header(report: Report) -> list[str]:
    env = report.environment
    s = env.settings
    return [
        "tokendist benchmark",
        f"  machine: {env.cpus} CPUs, load average {env.load_before[0]:.2f} before, "
        f"{env.load_after[0]:.2f} after",
        f"  settings: {s['keys']} operator keys, batches of ≤ {s['batch_max_size']} "
        f"payments or ≤ {s['batch_max_wait_s']} s wait, "
        f"≤ {s['max_inflight_per_sender']} unconfirmed batches per key; "
        f"{s['topic_partitions']} partitions, relay batch {s['relay_batch_size']}, "
        f"finality {s['finality']}, receipt poll {s['receipt_poll_s']} s, "
        f"service log level {s['log_level']}",
        f"  service logs: {env.log_dir}",
    ]


def _rate_line(area: str, rate: Rate) -> str:
    label = f"  {area:<11} {rate.what}"
    return (
        f"{label:<{LABEL + 2}}{rate.count:>8,} in {rate.seconds:7.2f} s"
        f"  {rate.per_second:>10,.0f} /s"
    )


def _stages(report: Report) -> list[str]:
    st = report.stages
    return [
        "Raw stages, each alone (the ceilings)",
        _rate_line("PostgreSQL", st.enqueue),
        _rate_line("Kafka", st.kafka_produce),
        _rate_line("CPU", st.abi_encode),
        _rate_line("CPU", st.signing),
        _rate_line("RPC", st.rpc_block_number),
        _rate_line("RPC", st.rpc_send_raw),
        "Baselines: the pipeline's stages, each alone (the chain's: per block time, below)",
        _rate_line("Kafka", st.kafka_consume),
        _rate_line("PostgreSQL", st.consumer_db),
        _rate_line("PostgreSQL", st.db_batches),
        *_signers(st.signers),
    ]


def _signers(rates: tuple[SignerRate, ...]) -> list[str]:
    if not rates:
        return []
    lines = ["Signing per key custody (distributeBatch transactions, one after another)"]
    for r in rates:
        if r.rate is None:
            lines.append(f"  {'Signer':<11} {r.custody}: {r.note}")
        else:
            lines.append(_rate_line("Signer", r.rate) + (f"  ({r.note})" if r.note else ""))
    return lines


def _chain(c: ChainStages) -> list[str]:
    bi = c.block_interval
    return [
        f"Chain of its own, {c.block_time_s:g} s blocks: interval observed {bi.interval_ms} ms "
        f"({bi.blocks} blocks over {bi.seconds:.2f} s), block gas limit {c.block_gas_limit:,}",
        _chain_line(c.new_holders),
        _chain_line(c.existing_holders),
        f"  {'ceiling':<11} block gas limit ÷ {c.new_holders.gas_per_payment:,} gas "
        f"÷ {c.block_time_s:g} s = {c.ceiling_per_s:,.0f} payments/s",
        *(
            f"  {g.standard:<11} gas/payment {g.new_holders.gas_per_payment:,} new holder, "
            f"{g.existing_holders.gas_per_payment:,} existing (ERC-20: "
            f"{c.new_holders.gas_per_payment:,}, {c.existing_holders.gas_per_payment:,}), "
            f"batches of {g.new_holders.batch_size}"
            for g in c.standards
        ),
    ]


def _chain_line(c: ChainRate) -> str:
    return (
        _rate_line("chain", c.rate)
        + f"  {c.gas_per_payment:,} gas/payment, {c.batches} batches each {c.mean_ms:,} ms"
        " sign → mined"
    )


def _relay(report: Report) -> list[str]:
    r = report.relay
    p = r.published
    return [
        "Relay (one Relay, outbox pre-filled, until every row has published_at)",
        f"  {p.count:,} rows in {p.seconds:.2f} s = {p.per_second:,.0f} rows/s "
        f"(batches of {r.batch_size}; includes {r.startup_ms} ms start-up to the first claim)",
    ]


def _ms(p: Percentiles, *, p99: bool = True) -> str:
    def f(v: int | None) -> str:
        return "-" if v is None else f"{v:,}"

    parts = [p.p50_ms, p.p95_ms, *([p.p99_ms] if p99 else []), p.max_ms]
    return " / ".join(f(v) for v in parts)


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def _table(rows: list[tuple[str, list[str]]]) -> list[str]:
    """Label column, then one right-aligned column per run, as wide as its widest cell."""
    width = max(len(v) for _, values in rows for v in values) + 3
    return [
        f"  {label:<{LABEL}}" + "".join(f"{v:>{width}}" for v in values) for label, values in rows
    ]


def _end_to_end(runs: list[EndToEnd]) -> list[str]:
    first = runs[0]
    rows: list[tuple[str, list[str]]] = [
        ("", [f"{r.mode}, {r.block_time_s:g} s blocks" for r in runs]),
        ("", [f"{r.consumers} consumer" + ("s" if r.consumers > 1 else "") for r in runs]),
        ("payments, offered at", [f"{r.events:,}, {_offered(r)}" for r in runs]),
        ("credited / failed", [f"{r.credited:,} / {r.failed}" for r in runs]),
        ("events/s, first confirmed → last credited", [_per_s(r) for r in runs]),
        ("the chain's ceiling, payments/s; share of it", [_ceiling(r) for r in runs]),
        (
            "payment service confirmed them at",
            [f"{r.confirm.per_second:,.0f}/s ({r.confirm.seconds:.1f} s)" for r in runs],
        ),
        ("latency ms  p50 / p95 / p99 / max", [_ms(r.latency) for r in runs]),
        ("  where it goes, ms  p50 / p95 / max", ["" for _ in runs]),
        *(
            (f"    {name}", [_ms(r.segments[name], p99=False) for r in runs])
            for name in first.segments
        ),
        ("in flight (signed → credited), mean ms", [_mean(r.in_flight) for r in runs]),
        ("batches in flight at most (keys x cap)", [str(r.max_inflight) for r in runs]),
        (
            "blocks used; batches; payments per batch",
            [_blocks(r) for r in runs],
        ),
        (
            "peak RSS per consumer, MiB",
            [" / ".join(_mib(k) for k in r.consumer_peak_rss_kib) for r in runs],
        ),
        ("peak RSS of the relay, MiB", [_mib(r.relay_peak_rss_kib) for r in runs]),
        ("group lag while offered: max, at the end", [_lag(r) for r in runs]),
        ("  slope /s; mean, middle → last third; bounded?", [_bounded(r) for r in runs]),
        ("tokendist verify afterwards", ["ok" if r.verified else "FAILED" for r in runs]),
    ]
    lines = [
        f"End to end ({first.users} investors; relay and consumers are separate processes)",
        *_table(rows),
    ]
    for r in runs:
        if r.timed_out:
            lines.append(f"  ! {_name(r)} run timed out: figures cover what finished")
        if not r.verified:
            lines.append(f"  ! {_name(r)} run, verify report:")
            lines.extend(f"    {line}" for line in r.verify_report.splitlines())
    return lines


def _churn(runs: list[ChurnResult]) -> list[str]:
    first = runs[0]
    rows: list[tuple[str, list[str]]] = [
        ("membership", [r.membership for r in runs]),
        ("credited/s without faults", [_per_s_of(r.baseline) for r in runs]),
        (
            f"credited/s, a kill + restart every {first.every_s:g} s",
            [_per_s_of(r.churned) for r in runs],
        ),
        ("  ratio (goal ≥ 0.5)", [f"{r.ratio:.2f}" for r in runs]),
        ("members killed", [str(r.kills) for r in runs]),
        ("stall after a kill, ms  median / max", [_stall(r) for r in runs]),
        ("tokendist verify afterwards", ["ok" if r.verified else "FAILED" for r in runs]),
    ]
    lines = [
        f"Member churn ({first.consumers} consumers, {first.events:,} payments per phase; "
        "stall: kill → every partition with work credited again)",
        *_table(rows),
    ]
    lines += [f"  ! churn, {r.membership}: timed out" for r in runs if r.timed_out]
    return lines


def _per_s_of(rate: Rate) -> str:
    return f"{rate.per_second:,.1f} ({rate.count:,} in {rate.seconds:.1f} s)"


def _stall(r: ChurnResult) -> str:
    if r.stall_median_ms is None or r.stall_max_ms is None:
        return "-"
    return f"{r.stall_median_ms:,} / {r.stall_max_ms:,}"


def _name(r: EndToEnd) -> str:
    return f"{r.mode} {r.block_time_s:g} s {r.consumers}-consumer"


def _ceiling(r: EndToEnd) -> str:
    if not r.ceiling_per_s:
        return "-"
    return f"{r.ceiling_per_s:,.0f}; {r.throughput.per_second / r.ceiling_per_s:.2f}"


def _blocks(r: EndToEnd) -> str:
    if not r.blocks or not r.batches:
        return "-"
    return f"{r.blocks}; {r.batches}; {r.credited / r.batches:.1f}"


def _offered(r: EndToEnd) -> str:
    return f"{r.rate:g}/s" if r.rate else "once"


def _lag(r: EndToEnd) -> str:
    return f"{r.lag.max_lag:,}, {r.lag.end_lag:,}" if r.lag.samples else "-"


def _bounded(r: EndToEnd) -> str:
    lag = r.lag
    if not lag.samples:
        return "-"
    # Offered faster than any pipeline drains it, a burst's lag only ever grows.
    verdict = ("yes" if lag.bounded else "no") if r.rate else "n/a (burst)"
    means = f"{lag.middle_third_mean:,.0f} → {lag.last_third_mean:,.0f}"
    return f"{lag.slope_per_s:+.1f}; {means}; {verdict}"


def _versus(report: Report) -> list[str]:
    lines = [
        "Against the slowest baseline and the chain's ceiling",
        *(
            f"  {v.mode} {v.block_time_s:g} s {v.consumers}c: {v.events_per_s:,.1f} events/s = "
            f"{v.ratio:.2f} x {v.slowest_stage} ({v.slowest_per_s:,.1f} /s), "
            f"{v.ceiling_ratio:.2f} x ceiling ({v.ceiling_per_s:,.0f} /s)"
            for v in report.versus
        ),
        "Goals (issues 7, 12 and 14)",
    ]
    verdicts = {True: "met", False: "NOT met", None: "not measured"}
    lines += [f"  {goal}: {verdicts[met]}" for goal, met in report.goals.items()]
    return lines


def _memory(runs: list[EndToEnd]) -> list[str]:
    lines = []
    for r in (r for r in runs if r.mode == "memory"):
        names = list(r.memory[0].rss_kib) if r.memory else []
        lines += ["", f"RSS over the {_name(r)} run, MiB ({r.events:,} payments)"]
        lines += _table(
            [
                ("", names),
                *(
                    (
                        f"{p.label} ({p.credited:,} credited, {p.seconds:,.0f} s)",
                        [_mib(p.rss_kib[n]) for n in names],
                    )
                    for p in r.memory
                ),
                ("growth from 10% to the end", [_pct(r.memory_growth_pct.get(n)) for n in names]),
            ]
        )
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def _profiles(runs: list[EndToEnd]) -> list[str]:
    lines = []
    for r in (r for r in runs if r.profile):
        for name, shares in r.profile.items():
            lines += ["", f"py-spy, {_name(r)} run, {name}: % of wall-clock samples"]
            lines += [f"  {share:5.1f}  {what}" for what, share in shares]
    return lines


def _mean(p: Percentiles) -> str:
    return "-" if p.mean_ms is None else f"{p.mean_ms:,}"


def _per_s(r: EndToEnd) -> str:
    return f"{r.throughput.per_second:,.1f} ({r.throughput.seconds:.1f} s)"


def _notes(report: Report) -> list[str]:
    return [
        "Reading it:",
        "  - Latency runs from the payment's commit to the holding's credit. When payments",
        "    arrive as a burst (the default), most of it is queueing behind earlier payments;",
        "    --rate N confirms N/s instead, to see latency below saturation.",
        "  - All consumers share one pool of operator keys: at most keys x",
        "    max_inflight_per_sender batches are on the chain at once, whatever the number",
        "    of consumers. The ceiling is the chain's: one block's gas limit over the gas a",
        "    payment to a new holder costs (from the chain stage's receipts), per block time.",
        "  - 'claimed' is when a consumer's partition worker starts on the event: time",
        "    queued behind the same user's earlier events, or for a free place in the",
        "    partition's window, counts before it; 'claimed → signed' includes waiting for",
        "    the batch to fill (or batch_max_wait_s) and for a key under its in-flight cap.",
        "  - Figures are from one run on a shared machine (the stack and other work use the",
        "    same CPUs): expect noise of tens of percent between runs.",
    ]
