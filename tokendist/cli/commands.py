"""The subcommands' handlers. Each imports the machinery it runs when it runs, so
``tokendist stack up`` never loads web3 and a tool never loads the webhook server."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokendist.cli import inputs as valid
from tokendist.core.errors import InvalidInput
from tokendist.core.settings import ENV_PREFIX, Settings, SettingsError

if TYPE_CHECKING:
    from tokendist.consumer.chain import Chain
    from tokendist.ops.trex import Trex

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO_ROOT / "stack" / "stack.sh"


def cmd_stack(args: argparse.Namespace) -> int:
    extra = ["--brokers", str(args.brokers)] if args.action == "up" else []
    if args.action == "up" and args.cdc:
        extra.append("--cdc")
    if args.action == "up" and args.secure:
        extra.append("--secure")
    return subprocess.call(["bash", str(STACK_SCRIPT), args.action, *extra])  # noqa: S603,S607


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core import db

    async with db.connect(settings.database_url) as conn:
        applied = await db.migrate(conn)
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def cmd_schemas_export(args: argparse.Namespace) -> int:
    from tokendist.schemas.export import export

    for path in export(Path(args.out)):
        print(path)
    return 0


async def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core.signals import stop_on_signals
    from tokendist.outbox.relay import Relay

    stop = asyncio.Event()
    with stop_on_signals(stop):
        await Relay(settings.relay(), stop).run()
    return 0


async def cmd_cdc_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core import db
    from tokendist.outbox import cdc

    relay = settings.relay()  # it does the relay's work, as the relay's role
    async with db.connect(relay.database_url) as conn:
        result = await cdc.sweep(
            db.Database(conn),
            args.slot,
            timeout_s=args.timeout,
            retention_s=relay.relay_retention_s,
        )
    print(f"marked published: {result.marked}, pruned: {result.pruned}")
    return 0


async def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.consumer.runner import Runner
    from tokendist.core.signals import stop_on_signals

    if args.instance_id is not None:
        settings = settings.model_copy(update={"consumer_instance_id": args.instance_id})
    stop = asyncio.Event()
    with stop_on_signals(stop):
        await Runner(settings.consumer(), stop).run()
    return 0


async def cmd_webhook(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core.signals import stop_on_signals
    from tokendist.webhook.server import WebhookServer

    if not valid.is_paystack_key(settings.require_webhook().get_secret_value()):
        raise SettingsError(
            f"{ENV_PREFIX}PAYSTACK_SECRET_KEY is not a Paystack secret key (sk_live_… or sk_test_…)"
        )
    stop = asyncio.Event()
    with _listening(settings.webhook_host, settings.webhook_port) as sock, stop_on_signals(stop):
        await WebhookServer(settings.webhook(), stop, sock=sock).run()
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
    from tokendist import custody
    from tokendist.core import db
    from tokendist.ops.deploy import deploy_tokenization
    from tokendist.ops.trex import Trex, deploy_erc3643_tokenization

    rpc_url, deployer_key = settings.require_deployer()
    # Every key of the pool the consumers will sign with is granted the operator role.
    operators = [signer.address for signer in await custody.operator_signers(settings)]
    deployer = Trex(rpc_url, deployer_key)
    common: dict[str, Any] = {
        "tokenization_id": args.tokenization_id,
        "property_id": args.property_id,
        "operator": operators,
        "name": args.name,
        "symbol": args.symbol,
        "decimals": args.decimals,
        "supply": args.supply,
        "fund": args.fund,
    }
    try:
        async with db.connect(settings.database_url) as conn:
            if args.standard == "erc3643":
                d = await deploy_erc3643_tokenization(
                    deployer, conn, country=args.country, **common
                )
            else:
                d = await deploy_tokenization(deployer, conn, **common)
    finally:
        await deployer.close()
    print(
        f"tokenization {d.tokenization_id} ({args.standard}): token {d.token_address}, "
        f"distributor {d.distributor_address} (operators {', '.join(operators)}), "
        f"supply {d.supply}"
    )
    return 0


async def cmd_rotate_operator(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core import db
    from tokendist.ops.deploy import Deployer
    from tokendist.ops.repository import ToolRepository

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


def _trex(settings: Settings) -> Trex | None:
    """The deployer's ERC-3643 adapter when its key is set (kyc needs it only once an
    ERC-3643 tokenization exists, and says so)."""
    from tokendist.ops.trex import Trex

    if settings.deployer_key is None or settings.rpc_url is None:
        return None
    return Trex(settings.rpc_url, settings.deployer_key)


async def cmd_kyc_approve(args: argparse.Namespace, settings: Settings) -> int:
    from eth_account import Account

    from tokendist import custody
    from tokendist.core import db
    from tokendist.ops.kyc import approve

    operators = await custody.operator_signers(settings) if settings.has_operator_keys else []
    ours = [signer.address for signer in operators]
    if settings.deployer_key is not None:
        ours.append(Account.from_key(settings.deployer_key.get_secret_value()).address)
    trex = _trex(settings)
    try:
        async with db.connect(settings.database_url) as conn:
            released = await approve(
                conn, args.user_id, args.wallet, not_wallets=ours, trex=trex, country=args.country
            )
    finally:
        if trex is not None:
            await trex.close()
    print(f"user {args.user_id} approved; {released} parked distributions re-driven")
    return 0


async def cmd_kyc_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core import db
    from tokendist.ops.kyc import revoke

    trex = _trex(settings)
    try:
        async with db.connect(settings.database_url) as conn:
            removed = await revoke(conn, args.user_id, trex=trex)
    finally:
        if trex is not None:
            await trex.close()
    where = "; identity removed from the registries" if removed else ""
    print(f"user {args.user_id} revoked{where}")
    return 0


async def cmd_redrive(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core import db
    from tokendist.ops.redrive import redrive_failed

    async with db.connect(settings.database_url) as conn:
        count = await redrive_failed(conn, args.event_ids or None)
    print(f"{count} failed distributions re-driven through the outbox")
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core import db
    from tokendist.ops.keys import Node
    from tokendist.ops.status import KafkaOffsets, gather

    node = Node.connect(settings.rpc_url) if settings.rpc_url else None
    try:
        async with db.connect(settings.database_url) as conn, KafkaOffsets(settings) as offsets:
            print((await gather(conn, offsets, node)).render())
    finally:
        if node is not None:
            await node.close()
    return 0


async def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core import db
    from tokendist.ops.keys import Node, list_keys
    from tokendist.ops.repository import ToolRepository

    if not settings.rpc_url:
        raise SettingsError(f"{ENV_PREFIX}RPC_URL is not set: the keys are read from the node")
    node = Node.connect(settings.rpc_url)
    try:
        async with db.connect(settings.database_url) as conn:
            keys = await list_keys(ToolRepository(conn), node)
    finally:
        await node.close()
    for key in keys:
        print(key.line())
    print(f"{len(keys)} operator keys")
    return 0


async def cmd_keys_add(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core import db
    from tokendist.ops.deploy import Deployer
    from tokendist.ops.keys import add_key
    from tokendist.ops.repository import ToolRepository

    deployer = Deployer(*settings.require_deployer())
    try:
        async with db.connect(settings.database_url) as conn:
            print(await add_key(deployer, ToolRepository(conn), args.address))
    finally:
        await deployer.close()
    return 0


async def cmd_keys_remove(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core import db
    from tokendist.ops.deploy import Deployer
    from tokendist.ops.keys import remove_key
    from tokendist.ops.repository import ToolRepository

    deployer = Deployer(*settings.require_deployer())
    try:
        async with db.connect(settings.database_url) as conn:
            removal = await remove_key(
                deployer, ToolRepository(conn), args.address, wait_s=args.wait
            )
    finally:
        await deployer.close()
    if removal.remaining:
        print(f"tokendist: error: {removal.line()}", file=sys.stderr)
        return 1
    print(removal.line())
    return 0


async def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    import aiohttp

    from tokendist.core import db
    from tokendist.core.signals import stop_on_signals
    from tokendist.sim.simulator import Channel, Plan, Simulator, ThroughWebhook

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
    from tokendist.core.signals import stop_on_signals
    from tokendist.sim.demo import Demo
    from tokendist.sim.simulator import Plan

    plan = Plan(count=args.payments, rate=args.rate, users=args.users, seed=args.seed)
    demo = Demo(
        settings, plan, args.consumers, dict(os.environ), Path(args.log_dir), standard=args.standard
    )
    stop = asyncio.Event()
    with stop_on_signals(stop):
        return await demo.run(stop)


async def _operator_chain(settings: Settings) -> Chain:
    """The node, seen as the pool's first operator key (whatever its custody)."""
    from tokendist import custody
    from tokendist.consumer.chain import Chain

    rpc_url = settings.require_rpc()
    return Chain(rpc_url, (await custody.operator_signers(settings))[0])


async def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.consumer.repository import Repository
    from tokendist.core import db
    from tokendist.ops.reconcile import Reconciler
    from tokendist.ops.repository import ToolRepository

    chain = await _operator_chain(settings)
    trex = _trex(settings)
    pool = await db.create_pool(settings.database_url, max_size=4)
    try:
        result = await Reconciler(
            Repository(pool),
            ToolRepository(pool),
            chain,
            settings.chain_check(),
            trex,
        ).run(grace_s=args.grace, dry_run=args.dry_run)
    finally:
        await pool.close()
        await chain.close()
        if trex is not None:
            await trex.close()
    print(("dry run: nothing changed\n" if args.dry_run else "") + result.render())
    return 0 if result.report is not None and result.report.ok else 1


async def cmd_chain_check(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.consumer.endpoints import Endpoints
    from tokendist.core import db
    from tokendist.core.signals import stop_on_signals
    from tokendist.ops.chaincheck import ChainChecker, NodeReader
    from tokendist.ops.repository import ToolRepository

    section = settings.chain_check()
    if args.interval is not None:
        section = section.model_copy(update={"chain_check_interval_s": args.interval})
    rpc = Endpoints(section.endpoints(settings.require_rpc()), section)
    pool = await db.create_pool(settings.database_url, max_size=2)
    stop = asyncio.Event()
    try:
        checker = ChainChecker(section, ToolRepository(pool), NodeReader(rpc), stop)
        if args.once:
            result = await checker.check()
            if result is None:
                print("chain check: not run, another checker holds the lock; try again")
                return 1
            print(
                f"chain check at block {result.head}: {result.checked} credited checked, "
                f"{len(result.missing)} not on chain"
            )
            return 0 if not result.missing else 1
        with stop_on_signals(stop):
            await checker.run()
    finally:
        await pool.close()
        await rpc.close()
    return 0


async def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.ops.replay import plan_and_apply, render

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
    from tokendist.ops import dlq_admin

    parked = await dlq_admin.read_all(settings)
    for p in parked[-args.limit :]:
        print(p.line())
    print(
        f"{dlq_admin.distinct(parked)} messages in {len(parked)} records of "
        f"{settings.dlq_topic} (a replay or a crash parks a message again)"
    )
    return 0


async def cmd_dlq_redrive(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.ops import dlq_admin

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


def dlq_redrive_names_something(args: argparse.Namespace) -> str | None:
    if args.positions and args.all:
        return "dlq redrive: name messages (partition:offset) or --all, not both"
    if not args.positions and not args.reason and not args.all:
        return "dlq redrive: name messages (partition:offset), --reason or --all"
    return None


def deploy_problem(args: argparse.Namespace) -> str | None:
    from tokendist.ops.deploy import amounts_problem

    if args.standard == "erc3643":
        if args.country is None:
            return "--standard erc3643 needs --country (the Distributor's identity's country)"
        if args.decimals > 18:
            return f"--decimals {args.decimals}: an ERC-3643 token has at most 18"
    return amounts_problem(args.supply, args.fund)


async def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core import db
    from tokendist.ops.verify import verify

    chain = await _operator_chain(settings)
    try:
        async with db.connect(settings.database_url) as conn:
            report = await verify(conn, chain, grace_s=args.grace, shared_chain=args.shared_chain)
    finally:
        await chain.close()
    print(report.render())
    return 0 if report.ok else 1


def legacy_audit_problem(args: argparse.Namespace) -> str | None:
    ids = [tokenization_id for tokenization_id, _ in args.token]
    if not args.legacy_dsn:
        return "legacy audit: give --legacy-dsn (or set TOKENDIST_LEGACY_DATABASE_URL)"
    if len(set(ids)) < len(ids):
        return "legacy audit: a tokenization is given twice in --token"
    if args.to_block is not None and args.to_block < args.from_block:
        return f"legacy audit: --to-block {args.to_block} is before --from-block {args.from_block}"
    if not Path(args.out).parent.is_dir():
        return f"legacy audit: --out {args.out}: {Path(args.out).parent} is not a directory"
    return None


async def cmd_legacy_audit(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.ops.legacy.audit import Request, audit
    from tokendist.ops.legacy.chain import TransferReader
    from tokendist.ops.legacy.repository import OldDatabase

    if settings.rpc_url is None:
        raise SettingsError(f"{ENV_PREFIX}RPC_URL is not set: the audit reads the chain")
    request = Request(dict(args.token), args.old_wallet, args.from_block, args.to_block)
    reader = TransferReader(settings.rpc_url)
    try:
        async with OldDatabase.connect(args.legacy_dsn) as old:
            result = await audit(old, reader, request)
    finally:
        await reader.close()
    try:
        written = result.write(Path(args.out))
    except OSError as exc:
        raise InvalidInput(f"cannot write the audit to {args.out}: {exc.strerror}") from None
    print(result.render(table_limit=args.table))
    print(f"wrote {written[0]} and {written[1]}")
    return 0


async def cmd_legacy_settle(args: argparse.Namespace, settings: Settings) -> int:
    from tokendist.core import db
    from tokendist.core.failpoints import Failpoints
    from tokendist.ops.legacy import report
    from tokendist.ops.legacy.repository import Adoptions
    from tokendist.ops.legacy.settle import settle

    audit = report.read(Path(args.audit_file))
    async with db.connect(settings.database_url) as conn:
        result = await settle(
            Adoptions(conn), audit, dry_run=args.dry_run, failpoints=Failpoints(settings.failpoints)
        )
    print(result.render())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tokendist.bench.run import execute

    return execute(args)
