"""The ``tokendist`` command line. The only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from tokendist.bench.options import PARSER
from tokendist.bench.options import add_arguments as add_bench_arguments
from tokendist.cli import commands as cmd
from tokendist.cli import errors as cli_errors
from tokendist.cli import inputs as valid
from tokendist.core import logs
from tokendist.core.settings import (
    ENV_PREFIX,
    Settings,
    SettingsError,
    load_settings,
    secret_values,
)

Handler = Callable[[argparse.Namespace], int]


def _async(
    fn: Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]], *, tool: bool = False
) -> Handler:
    """Wrap an async command: settings are loaded and checked first so a bad variable fails
    fast. A ``tool`` (one-shot operator command) keeps the libraries' own log lines quiet:
    their outage reports would only repeat, in many lines, the one line ``main`` prints."""

    def run(args: argparse.Namespace) -> int:
        settings = load_settings()
        _check_keys(settings)
        if tool and args.log_level != "DEBUG":
            logging.disable(logging.ERROR)
        return asyncio.run(fn(args, settings))

    return run


def _tool(fn: Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]) -> Handler:
    return _async(fn, tool=True)


def _check_keys(settings: Settings) -> None:
    for name in ("operator_key", "deployer_key"):
        secret = getattr(settings, name)
        if secret is not None and not valid.is_private_key(secret.get_secret_value()):
            raise SettingsError(
                f"{ENV_PREFIX}{name.upper()} is not a private key (64 hex digits, 0x optional)"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokendist", description=__doc__)
    parser.add_argument(
        "--log-level",
        type=valid.log_level,
        default=os.environ.get(f"{ENV_PREFIX}LOG_LEVEL", "INFO"),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="local PostgreSQL, Kafka and anvil without Docker")
    stack.add_argument("action", choices=["up", "down", "status", "env"])
    stack.add_argument("--brokers", type=int, choices=[1, 3], default=1)
    stack.add_argument("--cdc", action="store_true", help="up: also Debezium in Kafka Connect")
    stack.add_argument("--secure", action="store_true", help="up: TLS, SASL and ACLs")
    stack.set_defaults(handler=cmd.cmd_stack)

    dbp = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    dbp.add_parser("migrate", help="apply pending migrations").set_defaults(
        handler=_tool(cmd.cmd_migrate)
    )

    sch = sub.add_parser("schemas", help="event schemas").add_subparsers(dest="s", required=True)
    export = sch.add_parser("export", help="write JSON Schema for upstream producers")
    export.add_argument("--out", default="schemas/json")
    export.set_defaults(handler=cmd.cmd_schemas_export)

    sub.add_parser("relay", help="publish the outbox to Kafka").set_defaults(
        handler=_async(cmd.cmd_relay)
    )
    sub.add_parser(
        "webhook", help="receive the payment provider's webhooks (and POST /investments)"
    ).set_defaults(handler=_async(cmd.cmd_webhook))
    _add_operations(sub)
    return parser


def _add_consume(sub: Any) -> None:
    consume = sub.add_parser("consume", help="distribute tokens for payment events")
    consume.add_argument(
        "--instance-id",
        type=valid.instance_id,
        help="static group membership: unique per member, kept across restarts "
        "(default: TOKENDIST_CONSUMER_INSTANCE_ID; unset: dynamic membership)",
    )
    consume.set_defaults(handler=_async(cmd.cmd_consume))


def _add_kyc(sub: Any) -> None:
    kyc = sub.add_parser("kyc", help="investor verification").add_subparsers(
        dest="k", required=True
    )
    approve = kyc.add_parser("approve", help="approve a user and release parked payments")
    approve.add_argument("user_id", type=valid.identifier)
    approve.add_argument("--wallet", type=valid.address, default=None)
    approve.add_argument(
        "--country",
        type=valid.integer(1, 999),
        default=None,
        help="ERC-3643: the investor's country, ISO 3166-1 numeric (566: Nigeria)",
    )
    approve.set_defaults(handler=_tool(cmd.cmd_kyc_approve))
    revoke = kyc.add_parser(
        "revoke", help="revoke a user: no further payment; off every identity registry"
    )
    revoke.add_argument("user_id", type=valid.identifier)
    revoke.set_defaults(handler=_tool(cmd.cmd_kyc_revoke))


def _add_operations(sub: Any) -> None:
    _add_consume(sub)

    chain = sub.add_parser("chain", help="contracts").add_subparsers(dest="c", required=True)
    deploy = chain.add_parser("deploy", help="deploy token + Distributor, fund, record")
    deploy.add_argument("--tokenization-id", required=True, type=valid.identifier)
    deploy.add_argument("--property-id", required=True, type=valid.identifier)
    deploy.add_argument("--name", default="Property Token", type=valid.label(64))
    deploy.add_argument("--symbol", default="PROP", type=valid.label(16))
    deploy.add_argument("--decimals", type=valid.integer(0, 255), default=18)
    deploy.add_argument(
        "--supply", type=valid.token_units, default=10**9 * 10**18, help="base units"
    )
    deploy.add_argument(
        "--fund",
        type=valid.token_units,
        default=None,
        help="base units moved into the Distributor (default: all)",
    )
    deploy.add_argument(
        "--standard",
        choices=["erc20", "erc3643"],
        default="erc20",
        help="erc3643: a T-REX security token suite (identity registry, compliance, ...)",
    )
    deploy.add_argument(
        "--country",
        type=valid.integer(1, 999),
        default=None,
        help="erc3643: the Distributor's identity's country (ISO 3166-1 numeric)",
    )
    deploy.set_defaults(handler=_tool(cmd.cmd_deploy), check=cmd.deploy_problem)

    rotate = chain.add_parser(
        "rotate-operator", help="make another key the Distributor's operator (owner only)"
    )
    rotate.add_argument("--tokenization-id", required=True, type=valid.identifier)
    rotate.add_argument("--new-operator", required=True, type=valid.address)
    rotate.set_defaults(handler=_tool(cmd.cmd_rotate_operator))

    _add_keys(sub)

    _add_kyc(sub)

    redrive = sub.add_parser(
        "redrive", help="retry distributions that failed before signing (e.g. after a top-up)"
    )
    redrive.add_argument("event_ids", nargs="*", type=uuid.UUID, help="default: all of them")
    redrive.set_defaults(handler=_tool(cmd.cmd_redrive))

    sweep = sub.add_parser(
        "cdc-sweep",
        help="under Debezium CDC: mark published the outbox rows the connector's slot "
        "confirmed, and prune as the relay does",
    )
    sweep.add_argument("--slot", type=valid.slot_name, default="tokendist_outbox")
    sweep.add_argument("--timeout", type=valid.seconds, default=60.0, help="seconds")
    sweep.set_defaults(handler=_tool(cmd.cmd_cdc_sweep))

    sub.add_parser("status", help="one screen: backlog, lag, states, DLQ, balances").set_defaults(
        handler=_tool(cmd.cmd_status)
    )

    rec = sub.add_parser("reconcile", help="repair what is provably safe, report the rest")
    rec.add_argument("--grace", type=valid.seconds, default=60.0, help="only rows idle this long")
    rec.add_argument("--dry-run", action="store_true", help="say what would be repaired")
    rec.set_defaults(handler=_tool(cmd.cmd_reconcile))

    chk = sub.add_parser(
        "chain-check", help="watch credited payouts on the chain (reorgs deeper than finality)"
    )
    chk.add_argument(
        "--interval",
        type=valid.interval,
        help="seconds between checks (default: TOKENDIST_CHAIN_CHECK_INTERVAL_S)",
    )
    chk.add_argument("--once", action="store_true", help="one check; exit 1 if any is missing")
    # `--once` is a one-shot tool (one line); without it, a service that logs.
    chk.set_defaults(
        handler=lambda args: (_tool if args.once else _async)(cmd.cmd_chain_check)(args)
    )

    rep = sub.add_parser("replay", help="reset a stopped group's offsets (recovery)")
    target = rep.add_mutually_exclusive_group(required=True)
    target.add_argument("--earliest", action="store_true", help="from the start of the topic")
    target.add_argument("--to-timestamp", type=valid.timestamp_ms, help="ISO-8601 time with zone")
    target.add_argument(
        "--to-offsets", type=valid.offsets, help="partition:offset,... (others unchanged)"
    )
    target.add_argument(
        "--fresh-group", type=valid.identifier, help="a new group id that starts from the earliest"
    )
    rep.add_argument("--dry-run", action="store_true", help="say what would be reprocessed")
    rep.set_defaults(handler=_tool(cmd.cmd_replay))

    _add_dlq(sub)
    _add_legacy(sub)

    ver = sub.add_parser("verify", help="check every invariant; exit 0 only if all hold")
    ver.add_argument(
        "--grace", type=valid.seconds, default=300.0, help="seconds before in-flight is stuck"
    )
    ver.add_argument(
        "--shared-chain",
        action="store_true",
        help="the tokens also move outside this system: skip the balanceOf check",
    )
    ver.set_defaults(handler=_tool(cmd.cmd_verify))
    _add_simulation(sub)


def _add_keys(sub: Any) -> None:
    keys = sub.add_parser("keys", help="the operator keys the consumers sign with").add_subparsers(
        dest="action", required=True
    )
    keys.add_parser("list", help="each key: state, batches in flight, nonces, gas").set_defaults(
        handler=_tool(cmd.cmd_keys_list)
    )
    add = keys.add_parser("add", help="make a key an operator of every Distributor, active")
    add.add_argument("address", type=valid.address)
    add.set_defaults(handler=_tool(cmd.cmd_keys_add))
    remove = keys.add_parser(
        "remove", help="drain a key, then revoke it on every Distributor (run again if told)"
    )
    remove.add_argument("address", type=valid.address)
    remove.add_argument(
        "--wait", type=valid.seconds, default=120.0, help="seconds to wait for its batches"
    )
    remove.set_defaults(handler=_tool(cmd.cmd_keys_remove))


def _add_dlq(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="the dead-letter topic").add_subparsers(
        dest="action", required=True
    )
    listing = dlq.add_parser("list", help="the parked messages, oldest first")
    listing.add_argument("--limit", type=valid.integer(1), default=50, help="the newest N")
    listing.set_defaults(handler=_tool(cmd.cmd_dlq_list))
    again = dlq.add_parser("redrive", help="send messages back through full validation")
    again.add_argument(
        "positions", nargs="*", type=valid.position, help="DLQ records as partition:offset"
    )
    again.add_argument("--reason", help="only records parked for this reason")
    again.add_argument("--all", action="store_true", help="every record")
    again.add_argument("--dry-run", action="store_true")
    again.set_defaults(handler=_tool(cmd.cmd_dlq_redrive), check=cmd.dlq_redrive_names_something)


def _add_legacy(sub: Any) -> None:
    legacy = sub.add_parser(
        "legacy", help="adopt the investors of the system tokendist replaces"
    ).add_subparsers(dest="legacy", required=True)
    aud = legacy.add_parser("audit", help="old investments vs old transfers, per investor")
    aud.add_argument(
        "--legacy-dsn",
        default=os.environ.get(f"{ENV_PREFIX}LEGACY_DATABASE_URL"),
        help="the old database, read only (default: TOKENDIST_LEGACY_DATABASE_URL)",
    )
    aud.add_argument(
        "--token",
        action="append",
        required=True,
        type=valid.tokenization_token,
        metavar="TOKENIZATION=0xADDRESS",
        help="a tokenization and its property token (repeat per tokenization)",
    )
    aud.add_argument(
        "--old-wallet", action="append", required=True, type=valid.address, help="repeatable"
    )
    aud.add_argument("--from-block", type=valid.integer(0), default=0)
    aud.add_argument("--to-block", type=valid.integer(0), default=None, help="default: head")
    aud.add_argument("--out", default="legacy-audit", help="writes OUT.json and OUT.csv")
    aud.add_argument("--table", type=valid.integer(0), default=50, help="rows printed")
    aud.set_defaults(handler=_tool(cmd.cmd_legacy_audit), check=cmd.legacy_audit_problem)
    settle = legacy.add_parser("settle", help="top up and adopt from a reviewed audit file")
    settle.add_argument("audit_file", help="the audit's .json file")
    settle.add_argument("--dry-run", action="store_true", help="say what would be done")
    settle.set_defaults(handler=_tool(cmd.cmd_legacy_settle))


def _add_simulation(sub: Any) -> None:
    sim = sub.add_parser("simulate", help="a simulated payment service confirming payments")
    sim.add_argument("--tokenization-id", required=True, type=valid.identifier)
    sim.add_argument("--property-id", default="property", type=valid.identifier)
    sim.add_argument("--rate", type=valid.rate, default=5.0, help="payments per second")
    sim.add_argument(
        "--count", type=valid.integer(0), default=0, help="payments to confirm (0: forever)"
    )
    sim.add_argument("--users", type=valid.integer(1), default=40)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument(
        "--webhook-url",
        help="pay through `tokendist webhook` at this URL (checkout API + signed webhooks)",
    )
    sim.set_defaults(handler=_async(cmd.cmd_simulate))

    demo = sub.add_parser("demo", help="the whole system end to end, with live progress")
    demo.add_argument("--payments", type=valid.integer(1), default=300)
    demo.add_argument("--rate", type=valid.rate, default=25.0, help="payments per second")
    demo.add_argument("--users", type=valid.integer(1), default=40)
    demo.add_argument("--consumers", type=valid.integer(1, 16), default=2)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--log-dir", default=".stack/demo")
    demo.add_argument(
        "--standard",
        choices=("erc20", "erc3643"),
        default="erc20",
        help="the token: a plain ERC-20, or an ERC-3643 (T-REX) suite with on-chain KYC",
    )
    demo.set_defaults(handler=_async(cmd.cmd_demo))

    bench = sub.add_parser(
        "bench", help="stage baselines; end-to-end throughput, latency, lag, memory", **PARSER
    )
    add_bench_arguments(bench)
    bench.set_defaults(handler=cmd.cmd_bench)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments, each value checked by its ``type=`` and then the command's checks
    across values (``check``); a refusal is argparse's: one line, exit 2."""
    args = parser.parse_args(argv)
    check: Callable[[argparse.Namespace], str | None] | None = getattr(args, "check", None)
    if check is not None and (problem := check(args)) is not None:
        parser.error(problem)
    return args


def main(argv: list[str] | None = None) -> int:
    """Parse (argparse exits 2 on bad syntax or a refused value), then run the command
    inside the one error boundary: every failure is one line and exit 2 or 1."""
    args = parse(build_parser(), argv)
    logs.configure(args.log_level)
    try:
        code: int = args.handler(args)
    except (Exception, KeyboardInterrupt) as exc:  # the boundary: see tokendist.cli_errors
        code, line = cli_errors.one_line(exc, secret_values(os.environ))
        print(line, file=sys.stderr)
        return code
    return code


if __name__ == "__main__":
    sys.exit(main())
