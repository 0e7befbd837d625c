"""The ``tokendist`` command line. The only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.options import PARSER
from bench.options import add_arguments as add_bench_arguments
from tokendist import cli_errors, logs
from tokendist import cli_input as valid
from tokendist.errors import InvalidInput
from tokendist.settings import ENV_PREFIX, Settings, SettingsError, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_SCRIPT = REPO_ROOT / "stack" / "stack.sh"

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


def _secrets() -> list[str]:
    """What the one error line must never show: keys and the database password."""
    found = [v for k, v in os.environ.items() if k.startswith(ENV_PREFIX) and k.endswith("_KEY")]
    try:
        password = urlsplit(os.environ.get(f"{ENV_PREFIX}DATABASE_URL", "")).password
    except ValueError:
        password = None
    return [*found, *([password] if password else [])]


def cmd_stack(args: argparse.Namespace) -> int:
    extra = ["--brokers", str(args.brokers)] if args.action == "up" else []
    return subprocess.call(["bash", str(STACK_SCRIPT), args.action, *extra])  # noqa: S603,S607


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist import db

    async with db.connect(settings.database_url) as conn:
        applied = await db.migrate(conn)
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def cmd_schemas_export(args: argparse.Namespace) -> int:
    from schemas.export import export

    for path in export(Path(args.out)):
        print(path)
    return 0


async def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.relay import Relay
    from tokendist.signals import stop_on_signals

    stop = asyncio.Event()
    with stop_on_signals(stop):
        await Relay(settings, stop).run()
    return 0


async def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.runner import Runner
    from tokendist.signals import stop_on_signals

    if args.instance_id is not None:
        settings = settings.model_copy(update={"consumer_instance_id": args.instance_id})
    stop = asyncio.Event()
    with stop_on_signals(stop):
        await Runner(settings, stop).run()
    return 0


async def cmd_webhook(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.signals import stop_on_signals
    from webhook.server import WebhookServer

    if not valid.is_paystack_key(settings.require_webhook().get_secret_value()):
        raise SettingsError(
            f"{ENV_PREFIX}PAYSTACK_SECRET_KEY is not a Paystack secret key (sk_live_… or sk_test_…)"
        )
    stop = asyncio.Event()
    with _listening(settings.webhook_host, settings.webhook_port) as sock, stop_on_signals(stop):
        await WebhookServer(settings, stop, sock=sock).run()
    return 0


def _listening(host: str, port: int) -> socket.socket:
    """The receiver's socket, bound here: uvicorn reports a failed bind by exiting the
    interpreter from inside the event loop, a traceback that says nothing useful."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise InvalidInput(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; stop what holds it or "
            f"set {ENV_PREFIX}WEBHOOK_PORT / {ENV_PREFIX}WEBHOOK_HOST"
        ) from None


async def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    from eth_account import Account

    from consumer.deploy import Deployer, deploy_tokenization
    from tokendist import db

    rpc_url, deployer_key = settings.require_deployer()
    _, operator_key = settings.require_chain()
    operator = Account.from_key(operator_key.get_secret_value()).address
    deployer = Deployer(rpc_url, deployer_key)
    try:
        async with db.connect(settings.database_url) as conn:
            d = await deploy_tokenization(
                deployer,
                conn,
                tokenization_id=args.tokenization_id,
                property_id=args.property_id,
                operator=operator,
                name=args.name,
                symbol=args.symbol,
                decimals=args.decimals,
                supply=args.supply,
                fund=args.fund,
            )
    finally:
        await deployer.close()
    print(
        f"tokenization {d.tokenization_id}: token {d.token_address}, "
        f"distributor {d.distributor_address} (operator {operator}), supply {d.supply}"
    )
    return 0


async def cmd_rotate_operator(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.deploy import Deployer
    from consumer.tool_repository import ToolRepository
    from tokendist import db

    rpc_url, deployer_key = settings.require_deployer()
    async with db.connect(settings.database_url) as conn:
        distributor = await ToolRepository(conn).distributor_of(args.tokenization_id)
    if distributor is None:
        raise InvalidInput(f"no tokenization {args.tokenization_id} is recorded")
    deployer = Deployer(rpc_url, deployer_key)
    try:
        await deployer.set_operator(distributor, args.new_operator)
    finally:
        await deployer.close()
    print(f"distributor {distributor}: operator is now {args.new_operator}")
    return 0


async def cmd_kyc_approve(args: argparse.Namespace, settings: Settings) -> int:
    from eth_account import Account

    from consumer.kyc import approve
    from tokendist import db

    ours = [
        Account.from_key(key.get_secret_value()).address
        for key in (settings.operator_key, settings.deployer_key)
        if key is not None
    ]
    async with db.connect(settings.database_url) as conn:
        released = await approve(conn, args.user_id, args.wallet, not_wallets=ours)
    print(f"user {args.user_id} approved; {released} parked distributions re-driven")
    return 0


async def cmd_redrive(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.redrive import redrive_failed
    from tokendist import db

    async with db.connect(settings.database_url) as conn:
        count = await redrive_failed(conn, args.event_ids or None)
    print(f"{count} failed distributions re-driven through the outbox")
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.chain import Chain
    from consumer.status import KafkaOffsets, gather
    from tokendist import db

    chain = Chain(*settings.require_chain()) if settings.rpc_url and settings.operator_key else None
    try:
        async with db.connect(settings.database_url) as conn, KafkaOffsets(settings) as offsets:
            print((await gather(conn, offsets, chain)).render())
    finally:
        if chain is not None:
            await chain.close()
    return 0


async def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    import aiohttp

    from tokendist import db
    from tokendist.signals import stop_on_signals
    from tokendist.simulator import Channel, Plan, Simulator, ThroughWebhook

    pool = await db.create_pool(settings.database_url, max_size=4)
    session = aiohttp.ClientSession()
    stop = asyncio.Event()
    try:
        channel: Channel | None = None
        if args.webhook_url:
            channel = ThroughWebhook(args.webhook_url, settings, session)
        with stop_on_signals(stop):
            tally = await Simulator(
                settings, pool, args.tokenization_id, args.property_id, channel
            ).run(Plan(count=args.count, rate=args.rate, users=args.users, seed=args.seed), stop)
    finally:
        await session.close()
        await pool.close()
    print(f"confirmed {tally.confirmed}, re-delivered {tally.duplicates}, invalid {tally.invalid}")
    return 0


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.demo import Demo
    from tokendist.signals import stop_on_signals
    from tokendist.simulator import Plan

    plan = Plan(count=args.payments, rate=args.rate, users=args.users, seed=args.seed)
    demo = Demo(settings, plan, args.consumers, dict(os.environ), Path(args.log_dir))
    stop = asyncio.Event()
    with stop_on_signals(stop):
        return await demo.run(stop)


async def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.chain import Chain
    from consumer.reconcile import Reconciler
    from consumer.repository import Repository
    from consumer.tool_repository import ToolRepository
    from tokendist import db

    chain = Chain(*settings.require_chain())
    pool = await db.create_pool(settings.database_url, max_size=4)
    try:
        result = await Reconciler(
            Repository(pool), ToolRepository(pool), chain, confirmations=settings.confirmations
        ).run(grace_s=args.grace, dry_run=args.dry_run)
    finally:
        await pool.close()
        await chain.close()
    print(("dry run: nothing changed\n" if args.dry_run else "") + result.render())
    return 0 if result.report is not None and result.report.ok else 1


async def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.replay import plan_and_apply, render

    group = args.fresh_group or settings.consumer_group
    moves = await plan_and_apply(
        settings,
        group,
        earliest=args.earliest or bool(args.fresh_group),
        timestamp_ms=args.to_timestamp,
        offsets=args.to_offsets,
        dry_run=args.dry_run,
    )
    print(render(group, moves, dry_run=args.dry_run))
    if args.fresh_group and not args.dry_run:
        print(f"start consumers with TOKENDIST_CONSUMER_GROUP={group} to replay")
    return 0


async def cmd_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    from consumer import dlq_admin

    parked = await dlq_admin.read_all(settings)
    for p in parked[-args.limit :]:
        print(p.line())
    print(
        f"{dlq_admin.distinct(parked)} messages in {len(parked)} records of "
        f"{settings.dlq_topic} (a replay or a crash parks a message again)"
    )
    return 0


async def cmd_dlq_redrive(args: argparse.Namespace, settings: Settings) -> int:
    from consumer import dlq_admin

    parked = await dlq_admin.read_all(settings)
    chosen = dlq_admin.select(parked, positions=args.positions, reason=args.reason)
    if args.dry_run:
        for p in chosen:
            print("would re-drive " + p.line())
        print(f"{len(chosen)} messages would be re-driven")
        return 0
    sent = await dlq_admin.redrive(settings, chosen)
    print(f"re-drove {sent} messages to their topic")
    if sent < len(chosen):
        print(f"left {len(chosen) - sent} parked: neither key nor value, nothing to process")
    return 0


def _dlq_redrive_names_something(args: argparse.Namespace) -> str | None:
    if args.positions and args.all:
        return "dlq redrive: name messages (partition:offset) or --all, not both"
    if not args.positions and not args.reason and not args.all:
        return "dlq redrive: name messages (partition:offset), --reason or --all"
    return None


def _fund_within_supply(args: argparse.Namespace) -> str | None:
    from consumer.deploy import amounts_problem

    return amounts_problem(args.supply, args.fund)


async def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.chain import Chain
    from consumer.verify import verify
    from tokendist import db

    rpc_url, key = settings.require_chain()
    chain = Chain(rpc_url, key)
    try:
        async with db.connect(settings.database_url) as conn:
            report = await verify(conn, chain, grace_s=args.grace, shared_chain=args.shared_chain)
    finally:
        await chain.close()
    print(report.render())
    return 0 if report.ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.run import execute

    return execute(args)


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
    stack.set_defaults(handler=cmd_stack)

    dbp = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    dbp.add_parser("migrate", help="apply pending migrations").set_defaults(
        handler=_tool(cmd_migrate)
    )

    sch = sub.add_parser("schemas", help="event schemas").add_subparsers(dest="s", required=True)
    export = sch.add_parser("export", help="write JSON Schema for upstream producers")
    export.add_argument("--out", default="schemas/json")
    export.set_defaults(handler=cmd_schemas_export)

    sub.add_parser("relay", help="publish the outbox to Kafka").set_defaults(
        handler=_async(cmd_relay)
    )
    sub.add_parser(
        "webhook", help="receive the payment provider's webhooks (and POST /investments)"
    ).set_defaults(handler=_async(cmd_webhook))
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
    consume.set_defaults(handler=_async(cmd_consume))


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
    deploy.set_defaults(handler=_tool(cmd_deploy), check=_fund_within_supply)

    rotate = chain.add_parser(
        "rotate-operator", help="make another key the Distributor's operator (owner only)"
    )
    rotate.add_argument("--tokenization-id", required=True, type=valid.identifier)
    rotate.add_argument("--new-operator", required=True, type=valid.address)
    rotate.set_defaults(handler=_tool(cmd_rotate_operator))

    kyc = sub.add_parser("kyc", help="investor verification").add_subparsers(
        dest="k", required=True
    )
    approve = kyc.add_parser("approve", help="approve a user and release parked payments")
    approve.add_argument("user_id", type=valid.identifier)
    approve.add_argument("--wallet", type=valid.address, default=None)
    approve.set_defaults(handler=_tool(cmd_kyc_approve))

    redrive = sub.add_parser(
        "redrive", help="retry distributions that failed before signing (e.g. after a top-up)"
    )
    redrive.add_argument("event_ids", nargs="*", type=uuid.UUID, help="default: all of them")
    redrive.set_defaults(handler=_tool(cmd_redrive))

    sub.add_parser("status", help="one screen: backlog, lag, states, DLQ, balances").set_defaults(
        handler=_tool(cmd_status)
    )

    rec = sub.add_parser("reconcile", help="repair what is provably safe, report the rest")
    rec.add_argument("--grace", type=valid.seconds, default=60.0, help="only rows idle this long")
    rec.add_argument("--dry-run", action="store_true", help="say what would be repaired")
    rec.set_defaults(handler=_tool(cmd_reconcile))

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
    rep.set_defaults(handler=_tool(cmd_replay))

    _add_dlq(sub)

    ver = sub.add_parser("verify", help="check every invariant; exit 0 only if all hold")
    ver.add_argument(
        "--grace", type=valid.seconds, default=300.0, help="seconds before in-flight is stuck"
    )
    ver.add_argument(
        "--shared-chain",
        action="store_true",
        help="the tokens also move outside this system: skip the balanceOf check",
    )
    ver.set_defaults(handler=_tool(cmd_verify))
    _add_simulation(sub)


def _add_dlq(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="the dead-letter topic").add_subparsers(
        dest="action", required=True
    )
    listing = dlq.add_parser("list", help="the parked messages, oldest first")
    listing.add_argument("--limit", type=valid.integer(1), default=50, help="the newest N")
    listing.set_defaults(handler=_tool(cmd_dlq_list))
    again = dlq.add_parser("redrive", help="send messages back through full validation")
    again.add_argument(
        "positions", nargs="*", type=valid.position, help="DLQ records as partition:offset"
    )
    again.add_argument("--reason", help="only records parked for this reason")
    again.add_argument("--all", action="store_true", help="every record")
    again.add_argument("--dry-run", action="store_true")
    again.set_defaults(handler=_tool(cmd_dlq_redrive), check=_dlq_redrive_names_something)


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
    sim.set_defaults(handler=_async(cmd_simulate))

    demo = sub.add_parser("demo", help="the whole system end to end, with live progress")
    demo.add_argument("--payments", type=valid.integer(1), default=300)
    demo.add_argument("--rate", type=valid.rate, default=25.0, help="payments per second")
    demo.add_argument("--users", type=valid.integer(1), default=40)
    demo.add_argument("--consumers", type=valid.integer(1, 16), default=2)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--log-dir", default=".stack/demo")
    demo.set_defaults(handler=_async(cmd_demo))

    bench = sub.add_parser(
        "bench", help="stage baselines; end-to-end throughput, latency, lag, memory", **PARSER
    )
    add_bench_arguments(bench)
    bench.set_defaults(handler=cmd_bench)


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
        code, line = cli_errors.one_line(exc, _secrets())
        print(line, file=sys.stderr)
        return code
    return code


if __name__ == "__main__":
    sys.exit(main())
