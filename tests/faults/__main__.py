"""``python -m tests.faults --seed S --runs N [--brokers 1|3] [--payments P] [--standard erc3643]``

Exit code 0 only when every run passed. The stack comes from the environment; see
``tests/faults/stack.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from tests.faults import nemesis
from tests.faults.campaign import campaign
from tests.faults.run import Options
from tests.faults.stack import Stack, StackError


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _kinds(value: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in nemesis.FAULTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault kinds {unknown}; known: {list(nemesis.FAULTS)}"
        )
    return kinds


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    p.add_argument("--seed", type=int, required=True, help="run r uses Random(seed + r)")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=None,
        help="must match the stack (default: as many as TOKENDIST_KAFKA_BOOTSTRAP)",
    )
    p.add_argument("--payments", type=int, default=30, help="payments per run")
    p.add_argument("--max-faults", type=int, default=4, help="faults per run: 1..this")
    p.add_argument("--quiesce-timeout", type=float, default=120.0, help="seconds")
    p.add_argument("--kinds", type=_kinds, default=(), help="comma-separated subset of faults")
    featured = p.add_mutually_exclusive_group()
    featured.add_argument(
        "--rotate", action="store_true", help="seed s always includes kinds[s %% len(kinds)]"
    )
    featured.add_argument(
        "--feature",
        choices=list(nemesis.FAULTS),
        default=None,
        metavar="KIND",
        help="every run includes this kind, beside others drawn from --kinds",
    )
    p.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="per-run process logs (default: <stack home>/fault-runs)",
    )
    p.add_argument("--keep", action="store_true", help="keep databases and logs of passing runs")
    p.add_argument("--json", type=Path, default=None, help="write every run's record here")
    p.add_argument(
        "--standard",
        choices=("erc20", "erc3643"),
        default="erc20",
        help="the token: the plain ERC-20, or a T-REX suite (investors approved on-chain)",
    )
    p.add_argument(
        "--reset-chain-every",
        type=int,
        default=0,
        metavar="N",
        help="restart anvil from genesis every N runs (own stack only; long campaigns)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        stack = Stack.from_env()
    except StackError as exc:
        _out(f"tests.faults: {exc}")
        return 2
    if args.brokers is not None and args.brokers != stack.brokers:
        _out(
            f"tests.faults: --brokers {args.brokers}, but TOKENDIST_KAFKA_BOOTSTRAP lists "
            f"{stack.brokers}: bring the stack up with `stack.sh up --brokers {args.brokers}`"
        )
        return 2
    opts = Options(
        payments=args.payments,
        max_faults=args.max_faults,
        quiesce_timeout_s=args.quiesce_timeout,
        kinds=args.kinds,
        rotate=args.rotate,
        feature=args.feature,
        log_root=args.log_dir or stack.home / "fault-runs",
        keep_passing=args.keep,
        standard=args.standard,
    )
    _out(f"fault runs against the stack in {stack.home} ({stack.brokers} broker(s))")
    summary = asyncio.run(
        campaign(
            stack,
            args.seed,
            args.runs,
            opts,
            out=_out,
            json_path=args.json,
            reset_chain_every=args.reset_chain_every,
        )
    )
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
