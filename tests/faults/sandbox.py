"""One run's isolated world: its own database (cloned from the migrated template the
integration tests use), topic, consumer group, freshly funded operator and deployer keys
and freshly deployed contracts. Nothing a run does can leak into another run's checks."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from eth_account import Account
from pydantic import SecretStr

from tests.faults.stack import Stack
from tests.integration import harness
from tests.services import settings_for_tests
from tokendist.core import db, kafka
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployer, Deployment, deploy_tokenization
from tokendist.ops.trex import Trex, deploy_erc3643_tokenization

TEMPLATE_LOCK = 7117099  # the key tests/integration/conftest.py uses: one template builder
SUPPLY = 10**31
PLENTY = 10**30
COUNTRY = 566  # every investor's and the Distributor's, under --standard erc3643


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _admin(stack: Stack, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(stack.database_url, timeout=10)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def ensure_template(stack: Stack) -> str:
    """The migrated template, named by the migrations' hash exactly as conftest names it,
    so fault runs and integration tests share one (and a changed migration gets a new one)."""
    name = f"tokendist_tpl_{db.schema_digest()[:12]}"
    admin = await asyncpg.connect(stack.database_url, timeout=10)
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", TEMPLATE_LOCK)
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
            conn = await asyncpg.connect(_with_db(stack.database_url, name), timeout=10)
            try:
                await db.migrate(conn)
            finally:
                await conn.close()
        await admin.execute("SELECT pg_advisory_unlock($1)", TEMPLATE_LOCK)
    finally:
        await admin.close()
    return name


@dataclass
class World:
    tag: str
    stack: Stack
    db_name: str
    settings: Settings
    deployment: Deployment
    pool: asyncpg.Pool
    log_dir: Path
    # An operator of the Distributor no consumer holds: the nemesis pays with it behind
    # the consumers' backs (a payment an earlier transaction already paid).
    nemesis_key: SecretStr
    # --standard erc3643: the deployer's T-REX adapter, which registers investors'
    # identities on approval (the workload's ``kyc approve``).
    trex: Trex | None = None

    @property
    def operator(self) -> str:
        _, key = self.settings.require_chain()
        return str(Account.from_key(key.get_secret_value()).address)

    @property
    def operators(self) -> list[str]:
        """The consumers' key pool, by address."""
        _, keys = self.settings.require_keys()
        return [str(Account.from_key(k.get_secret_value()).address) for k in keys]


FINALITY_CONFIRMATIONS = 4


def run_settings(stack: Stack, database_url: str, tag: str) -> Settings:
    """The brief's short timings: a crashed member's partitions move after 6 s, a stuck
    transaction is re-sent after 2 s and fee-bumped after 5 s. Two operator keys, batches
    of at most 4 payments and 2 unconfirmed batches per key: a run of a few dozen
    payments fills batches and caps on both keys. Final after ``FINALITY_CONFIRMATIONS``
    blocks (a second at the stack's 0.25 s blocks), so that the ``reorg`` nemesis has
    1 to 3 blocks to take a mined batch out before it is final."""
    return settings_for_tests(
        database_url,
        stack.kafka_bootstrap,
        stack.rpc_url,
        name=f"faults.{tag}",
        topic=f"faults.{tag}",
        consumer_group=f"faults.{tag}",
        # With 3 brokers every partition has a copy on each, so one broker may die.
        topic_replication=stack.brokers,
        rebroadcast_after_s=2.0,
        fee_bump_after_s=5.0,
        operator_keys=SecretStr("0x" + bytes(Account.create().key).hex()),
        batch_max_size=4,
        batch_max_wait_s=0.3,
        max_inflight_per_sender=2,
        confirmations=FINALITY_CONFIRMATIONS,
    )


async def create_world(
    stack: Stack,
    tag: str,
    tokenization: tuple[str, str],
    *,
    fund: int | None,
    log_root: Path,
    standard: str = "erc20",
) -> World:
    """``tag`` names the database, topic and group (unique per attempt); ``tokenization``
    is the (id, property id) the workload's payments name; ``standard`` the token's: an
    ERC-3643 suite (T-REX) or the plain ERC-20."""
    template = await ensure_template(stack)
    db_name = f"faults_{tag}"
    for attempt in range(20):
        try:
            await _admin(stack, f'CREATE DATABASE "{db_name}" TEMPLATE "{template}"')
            break
        except asyncpg.ObjectInUseError:  # an integration test is cloning it right now
            await asyncio.sleep(0.1 * (attempt + 1))
    database_url = _with_db(stack.database_url, db_name)
    settings = run_settings(stack, database_url, tag)
    rpc_url, deployer_key = settings.require_deployer()
    _, operator_keys = settings.require_keys()
    nemesis = Account.create()
    operators = [Account.from_key(k.get_secret_value()).address for k in operator_keys]
    deployer_address = Account.from_key(deployer_key.get_secret_value()).address
    await harness.fund(rpc_url, *operators, nemesis.address, deployer_address)
    # min_size=0: a pool with a floor logs a traceback per attempt while pg is down.
    pool = await db.create_pool(database_url, min_size=0, max_size=8)
    trex = Trex(rpc_url, deployer_key) if standard == "erc3643" else None
    deployer = trex or Deployer(rpc_url, deployer_key)
    token: dict[str, Any] = {
        "tokenization_id": tokenization[0],
        "property_id": tokenization[1],
        "operator": [*operators, nemesis.address],
        "name": "Fault Towers",
        "symbol": "FLT",
        "decimals": 18,
        "supply": SUPPLY,
        "fund": PLENTY if fund is None else fund,
    }
    try:
        async with pool.acquire() as conn:
            if trex is not None:
                deployment = await deploy_erc3643_tokenization(trex, conn, country=COUNTRY, **token)
            else:
                deployment = await deploy_tokenization(deployer, conn, **token)
    except BaseException:
        await deployer.close()
        raise
    if trex is None:
        await deployer.close()
    log_dir = log_root / tag
    log_dir.mkdir(parents=True, exist_ok=True)
    nemesis_key = SecretStr("0x" + bytes(nemesis.key).hex())
    return World(tag, stack, db_name, settings, deployment, pool, log_dir, nemesis_key, trex)


async def destroy_world(world: World, *, keep: bool, keep_logs: bool = False) -> None:
    """Drop everything of a passing run; keep a failing run's database and logs to read
    (and the logs alone of a passing run whose processes misbehaved)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(world.pool.close(), timeout=10)
    if world.trex is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(world.trex.close(), timeout=10)
    if keep:
        return
    with contextlib.suppress(Exception):
        await _admin(world.stack, f'DROP DATABASE IF EXISTS "{world.db_name}" WITH (FORCE)')
    with contextlib.suppress(Exception):
        await asyncio.wait_for(_delete_topics(world.settings), timeout=30)
    if not keep_logs:
        shutil.rmtree(world.log_dir, ignore_errors=True)


async def _delete_topics(settings: Settings) -> None:
    # A thousand runs would otherwise leave 8,000 partitions on a 384 MB broker.
    admin = AIOKafkaAdminClient(**kafka.connection(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in (settings.topic, settings.dlq_topic) if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
