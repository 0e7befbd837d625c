"""The benchmark's flags, shared by ``tokendist bench`` and ``python -m tokendist.bench.run``.

Only argparse here: the ``tokendist`` parser imports this module for every command, so
it must not pull in the benchmark's machinery (web3, aiokafka).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

MODES = ("burst", "sustained", "memory", "churn")
MEMBERSHIPS = ("static", "dynamic")
STANDARDS = ("erc20", "erc3643")
DESCRIPTION = """Stage baselines (Kafka consume, the consumer's DB work, the chain), then the
whole pipeline: burst runs, a sustained-load run at a fixed rate, a long memory-growth
run, member churn (a SIGKILL + restart every few seconds), on a chain of its own per
block time (the stack's anvil binary, started by the benchmark). Prints a report, then
one JSON line with every figure. Needs the stack's addresses
(eval "$(tokendist stack env)"); makes its own databases, keys, contracts and topics."""
PARSER: dict[str, Any] = {
    "description": DESCRIPTION,
    "formatter_class": argparse.ArgumentDefaultsHelpFormatter,
}


def _counts(text: str) -> list[int]:
    counts = [int(n) for n in text.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("give positive whole numbers, comma-separated")
    return counts


def _positive(text: str) -> int:
    (count,) = _counts(text)
    return count


def _seconds(text: str) -> list[float]:
    try:
        values = [float(n) for n in text.split(",") if n.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not seconds: {text!r}") from exc
    if not values or min(values) <= 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError("give distinct positive block times, e.g. 0.25,2")
    return values


def _modes(text: str) -> list[str]:
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(MODES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown mode {', '.join(unknown)}; modes: {MODES}")
    return chosen


def _standards(text: str) -> list[str]:
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(STANDARDS))
    if unknown or "erc20" not in chosen:
        raise argparse.ArgumentTypeError(f"give erc20 and any of {STANDARDS[1:]}")
    return chosen


def _memberships(text: str) -> list[str]:
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(MEMBERSHIPS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"give some of {MEMBERSHIPS}")
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tokendist.bench.run", **PARSER)
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add = p.add_argument
    add(
        "--modes",
        type=_modes,
        default=["burst", "sustained"],
        help="of burst,sustained,memory,churn",
    )
    add(
        "--block-times",
        type=_seconds,
        default=[0.25, 2.0],
        help="seconds; a chain of its own for each (memory and churn: the first only)",
    )
    add("--keys", type=_positive, default=2, help="operator keys in each run's key pool")
    add("--anvil", default=None, help="anvil binary (default: the stack's, else PATH's)")
    add("--events", type=int, default=10_000, help="payments per burst run")
    add("--consumers", type=_counts, default=[1, 3], help="consumer processes per burst run")
    add("--rate", type=float, default=0.0, help="sustained: payments/s (0: half the best burst)")
    add("--sustained-s", type=float, default=60.0, help="sustained: seconds of offered load")
    add("--sustained-consumers", type=int, default=0, help="sustained (0: the best burst's)")
    add("--memory-events", type=int, default=200_000, help="memory: payments in the long run")
    add("--memory-consumers", type=int, default=1, help="memory: consumer processes")
    add("--churn-events", type=int, default=800, help="churn: payments per phase")
    add("--churn-consumers", type=int, default=3, help="churn: consumer processes")
    add("--churn-every-s", type=float, default=2.0, help="churn: seconds between kills")
    add("--churn-s", type=float, default=120.0, help="churn: kills stop after this long")
    add(
        "--churn-membership",
        type=_memberships,
        default=list(MEMBERSHIPS),
        help="churn: static (an instance id per member) and/or dynamic",
    )
    add("--relay-rows", type=int, default=10_000, help="outbox rows relayed; Kafka records")
    add("--db-events", type=int, default=4_000, help="events through the consumer's DB work")
    add("--chain-payments", type=int, default=4_000, help="payments per chain-stage run")
    add(
        "--standards",
        type=_standards,
        default=["erc20"],
        help="token standards whose gas the chain stage measures (the pipeline: erc20)",
    )
    # One investor's payments are paid strictly one after another (each waits for the
    # previous one's credit), so a burst from few investors measures that wait: a sale's
    # burst comes from thousands of investors, most paying once.
    add("--users", type=int, default=5000, help="investors the payments spread over")
    add("--writers", type=int, default=4, help="payment-service connections")
    add("--timeout", type=float, default=0.0, help="hang guard, s per run (0: 600 + events/2)")
    add("--profile", action="store_true", help="py-spy on each consumer of the burst runs")
    add("--service-log-level", default="INFO", help="relay/consumer log level")
    add("--json", type=Path, default=None, help="also write the JSON object to this file")
