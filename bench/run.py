"""``python -m bench.run``: the benchmark command (``make bench``).

Needs the stack's addresses in the environment (``eval "$(tokendist stack env)"``); all
else it makes for itself: a database (dropped at the end), funded keys, contracts,
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
from pathlib import Path

from bench import e2e, relay_stage, report, sandbox, stages, workload
from bench.results import Environment, Report, Stages
from tokendist import db, logs
from tokendist.errors import TransientError
from tokendist.settings import Settings, SettingsError

# Sizes of the raw-stage samples: each takes a second or two on a small machine.
SIGN_COUNT = 2000
BLOCK_NUMBER_CALLS = 500
SEND_RAW_CALLS = 200
BLOCK_WATCH_S = 3.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--events", type=int, default=2000, help="payments per end-to-end run")
    parser.add_argument("--relay-rows", type=int, default=10_000, help="outbox rows to relay")
    parser.add_argument(
        "--consumers",
        type=lambda s: [int(n) for n in s.split(",") if n.strip()],
        default=[1, 3],
        help="consumer process counts, one end-to-end run each (e.g. 1,3)",
    )
    parser.add_argument("--users", type=int, default=200, help="investors the payments spread over")
    parser.add_argument("--writers", type=int, default=4, help="payment-service connections")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="confirmations/s (0: one burst, as fast as possible)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per end-to-end run")
    parser.add_argument("--log-level", default="INFO", help="relay/consumer log level")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


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


async def bench(args: argparse.Namespace) -> Report:
    run_id = uuid.uuid4().hex[:10]
    base = await sandbox.bench_settings(run_id)
    log_dir = Path(tempfile.mkdtemp(prefix=f"tokendist-bench-{run_id}-"))
    load_before = os.getloadavg()
    topics: list[str] = []

    def named(settings: Settings, suffix: str) -> Settings:
        s = sandbox.renamed(settings, suffix)
        topics.extend([s.topic, s.dlq_topic])
        return s

    async with sandbox.isolated_database(base.database_url) as url:
        settings = base.model_copy(update={"database_url": url})
        topics.extend(f"{settings.topic}.c{n}{dlq}" for n in args.consumers for dlq in ("", ".dlq"))
        pool = await db.create_pool(url, max_size=args.writers + 4)
        try:
            sample = workload.payment(None, "sample", 0, workload.make_wallets(1)).event()
            produced = await stages.kafka_produce(
                named(settings, "kafka"), args.relay_rows, sample.model_dump_json().encode()
            )
            abi, signing = await stages.chain_cpu(settings, SIGN_COUNT)
            block_number = await stages.rpc_block_number(settings, BLOCK_NUMBER_CALLS)
            send_raw = await stages.rpc_send_raw(settings, SEND_RAW_CALLS)
            interval = await stages.block_interval(settings, BLOCK_WATCH_S)
            enqueued, relayed = await relay_stage.run(
                named(settings, "relay"), pool, args.relay_rows, args.writers
            )
            result = Report(
                environment=Environment(
                    cpus=os.cpu_count() or 0,
                    load_before=load_before,
                    load_after=load_before,  # replaced once everything ran
                    settings=settings_summary(settings, args.log_level),
                    log_dir=str(log_dir),
                ),
                stages=Stages(
                    enqueue=enqueued,
                    kafka_produce=produced,
                    abi_encode=abi,
                    signing=signing,
                    rpc_block_number=block_number,
                    rpc_send_raw=send_raw,
                    block_interval=interval,
                ),
                relay=relayed,
            )
            wallets = workload.make_wallets(args.users)
            await workload.register_users(pool, wallets)
            load = e2e.Load(
                events=args.events,
                wallets=wallets,
                writers=args.writers,
                rate=args.rate,
                timeout_s=args.timeout,
                log_dir=log_dir,
                log_level=args.log_level,
            )
            for consumers in args.consumers:
                result.end_to_end.append(await e2e.run(settings, pool, consumers, load))
        finally:
            await pool.close()
            await sandbox.delete_topics(base, topics)
    result.environment = dataclasses.replace(result.environment, load_after=os.getloadavg())
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The in-process relay logs every batch; the report is the output here.
    logs.configure("WARNING")
    try:
        result = asyncio.run(bench(args))
    except SettingsError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except TransientError as exc:
        # A service of the shared stack went away mid-run (someone restarted it): the
        # run is void; the database was dropped on the way out. Try again later.
        print(f"bench: the stack became unavailable: {exc}", file=sys.stderr)
        return 3
    print(report.render(result))
    if args.json is not None:
        args.json.write_text(json.dumps(dataclasses.asdict(result), indent=2, default=str) + "\n")
    good = all(r.verified and not r.timed_out for r in result.end_to_end)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
