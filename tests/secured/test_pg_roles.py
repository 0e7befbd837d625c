"""PostgreSQL on the secured stack (``stack/stack.sh up --secure``): TLS that verifies the
server against the stack's CA, no connection without it, and each component under its own
role (``tokendist/core/grants.sql``) doing its job and refused what it must not do.

The DSNs come from ``stack/stack.sh env`` of a secured stack: the owner's in
``TOKENDIST_DATABASE_URL``, each component's in ``TOKENDIST_<COMPONENT>_DATABASE_URL``.
Each test works in a database of its own, migrated by the owner; Kafka and the chain are
the stack's, as the environment names them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from eth_account import Account
from pydantic import SecretStr

from tests.integration import harness
from tests.integration import webhook_harness as wh
from tokendist.consumer.runner import Runner
from tokendist.core import db
from tokendist.core.errors import DatabaseUnavailable
from tokendist.core.settings import load_settings
from tokendist.ops import kyc
from tokendist.ops.redrive import redrive_failed
from tokendist.ops.status import KafkaOffsets, gather
from tokendist.outbox import queries as outbox_queries
from tokendist.outbox.relay import Relay
from tokendist.sim import provider
from tokendist.webhook.checkout import PendingInvestment, create_pending_investment
from tokendist.webhook.server import WebhookServer

ROOT = Path(__file__).resolve().parents[2]
HOW_TO_START = (
    'start it with stack/stack.sh up --secure, then eval "$(stack/stack.sh env)" '
    "(make test-secured does both)"
)
ROLE_VARIABLES = {
    "owner": "TOKENDIST_DATABASE_URL",
    "webhook": "TOKENDIST_WEBHOOK_DATABASE_URL",
    "relay": "TOKENDIST_RELAY_DATABASE_URL",
    "consumer": "TOKENDIST_CONSUMER_DATABASE_URL",
    "operator": "TOKENDIST_SECURE_OPERATOR_DATABASE_URL",
}


def _dsns() -> dict[str, str]:
    found = {role: os.environ.get(var, "") for role, var in ROLE_VARIABLES.items()}
    if not all("sslmode=verify-full" in dsn for dsn in found.values()):
        pytest.fail(f"no secured PostgreSQL in the environment: {HOW_TO_START}", pytrace=False)
    return found


def _in_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def _with_query(dsn: str, query: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(query=query))


@pytest.fixture
async def dsns() -> AsyncIterator[dict[str, str]]:
    """Each role's DSN to a database of this test's own, migrated (and granted) by the owner."""
    stack = _dsns()
    name = f"t_{uuid.uuid4().hex[:16]}"
    async with db.connect(stack["owner"]) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        async with db.connect(_in_database(stack["owner"], name)) as conn:
            await db.migrate(conn)
        yield {role: _in_database(dsn, name) for role, dsn in stack.items()}
    finally:
        async with db.connect(stack["owner"]) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def owner(dsns: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(dsns["owner"], max_size=4)
    yield pool
    await pool.close()


async def test_each_component_does_its_job_as_its_own_role(
    dsns: dict[str, str], owner: asyncpg.Pool
) -> None:
    """A payment from checkout to credit, every step as the role of the component that
    takes it: the operator deploys and approves the investor, the webhook records the
    pending investment and the provider's payment (and its outbox row), the relay
    publishes and marks it, the consumer pays and credits it; then the operator's
    verify, status and redrive."""
    name = uuid.uuid4().hex[:12]
    operator, deployer = Account.create(), Account.create()
    settings = load_settings(
        database_url=dsns["owner"],
        webhook_database_url=dsns["webhook"],
        relay_database_url=dsns["relay"],
        consumer_database_url=dsns["consumer"],
        operator_key=SecretStr("0x" + bytes(operator.key).hex()),
        deployer_key=SecretStr("0x" + bytes(deployer.key).hex()),
        paystack_secret_key=SecretStr(wh.LIVE_KEY),
        topic=f"payments.{name}",
        consumer_group=f"distributor.{name}",
        topic_partitions=2,
        relay_poll_interval_s=0.2,
        retry_base_s=0.1,
        retry_cap_s=2.0,
    )
    assert settings.rpc_url is not None
    await harness.fund(settings.rpc_url, operator.address, deployer.address)
    as_operator = await db.create_pool(dsns["operator"], max_size=2)
    as_webhook = await db.create_pool(dsns["webhook"], max_size=2)
    try:
        tk = await harness.deploy(settings, as_operator)
        async with as_operator.acquire() as conn:
            await kyc.approve(conn, "user-1", harness.wallet(1))
        order = PendingInvestment(
            investment_id="inv-1",
            user_id="user-1",
            tokenization_id=tk.tokenization_id,
            tokens=str(7 * 10**18),
            amount_minor=500_000,
            currency="NGN",
            provider_reference="PSK-1",
        )
        async with as_webhook.acquire() as conn:
            assert await create_pending_investment(conn, order)
        sock = wh.free_socket()
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        webhook = lambda stop: WebhookServer(settings.webhook(), stop, sock=sock)  # noqa: E731
        async with harness.running(webhook), aiohttp.ClientSession() as session:
            await harness.wait_until(lambda: wh.up(session, base), what="the receiver")
            delivery = provider.Provider(f"{base}/webhooks/paystack", wh.LIVE_KEY, session)
            status, _ = await delivery.deliver(provider.charge_success("PSK-1", 500_000))
        assert status == 200
        assert await harness.count(owner, "SELECT count(*) FROM outbox") == 1
        relay = lambda stop: Relay(settings.relay(), stop)  # noqa: E731
        consumer = lambda stop: Runner(settings.consumer(), stop)  # noqa: E731
        async with harness.running(relay), harness.running(consumer):
            await harness.wait_until(
                lambda: _credited(owner), timeout=90, what="the payment credited"
            )
        assert (
            await harness.count(owner, "SELECT count(*) FROM outbox WHERE published_at IS NULL")
            == 0
        )
        assert await harness.holding(owner, 1) == 7 * 10**18
        paid = [(to.lower(), amount) for to, amount in await harness.paid_to(settings, tk)]
        assert paid == [(harness.wallet(1).lower(), 7 * 10**18)]
        # The operator's read-mostly tools, as the operator.
        report = await harness.run_verify(settings, as_operator)
        assert report.ok, report.render()
        async with as_operator.acquire() as conn, KafkaOffsets(settings) as offsets:
            assert "credited" in (await gather(conn, offsets, None)).render()
            assert await redrive_failed(conn, None) == 0
    finally:
        await as_operator.close()
        await as_webhook.close()


async def _credited(pool: asyncpg.Pool) -> bool:
    return await harness.credited(pool) == 1


REFUSED = [
    ("webhook", "UPDATE token_holdings SET balance = balance + 1"),
    ("webhook", "UPDATE distributions SET state = 'credited'"),
    ("webhook", "SELECT count(*) FROM distributions"),
    ("webhook", "UPDATE investments SET amount_minor = 1"),
    ("webhook", "DELETE FROM outbox"),
    ("relay", "UPDATE distributions SET state = 'credited'"),
    ("relay", "UPDATE outbox SET payload = '{}'"),
    (
        "relay",
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) "
        "VALUES (gen_random_uuid(), 'user', 'u', 'PaymentConfirmed', '{}')",
    ),
    ("relay", "SELECT count(*) FROM payment_confirmations"),
    ("consumer", "UPDATE provider_payments SET status = 'accepted'"),
    ("consumer", "UPDATE payment_confirmations SET tokens = 1"),
    ("consumer", "UPDATE outbox SET published_at = now()"),
    ("consumer", "DELETE FROM outbox"),
    (
        "consumer",
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) "
        "VALUES (gen_random_uuid(), 'user', 'u', 'PaymentConfirmed', '{}')",
    ),
    ("consumer", "UPDATE investments SET amount_minor = 1"),
    ("operator", "UPDATE provider_payments SET amount_minor = 1"),
    ("operator", "DELETE FROM distributions"),
    ("operator", "UPDATE outbox SET payload = '{}'"),
]


@pytest.mark.parametrize(("role", "sql"), REFUSED)
async def test_a_role_is_refused_what_its_component_must_not_do(
    dsns: dict[str, str], role: str, sql: str
) -> None:
    async with db.connect(dsns[role]) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(sql)


async def test_the_relay_claims_and_marks_as_its_own_role(
    dsns: dict[str, str], owner: asyncpg.Pool
) -> None:
    """The relay's statements, as the relay: claim, mark published, prune."""
    await owner.execute(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) "
        "VALUES (gen_random_uuid(), 'user', 'u', 'PaymentConfirmed', '{}')"
    )
    async with db.connect(dsns["relay"]) as conn, conn.transaction():
        rows = await conn.fetch(outbox_queries.CLAIM_BATCH, 10)
        await conn.execute(outbox_queries.MARK_PUBLISHED, [r["id"] for r in rows])
        assert await conn.execute(outbox_queries.PRUNE_PUBLISHED, -1) == "DELETE 1"
    assert len(rows) == 1


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """A CA of its own, like the stack's but not the one that signed the server."""
    subprocess.run(["bash", str(ROOT / "stack" / "tls.sh"), str(tmp_path), "pg"], check=True)
    return tmp_path / "ca.crt"


async def test_the_server_is_verified_against_the_stacks_ca(other_ca: Path) -> None:
    """verify-full with another CA than the one that signed the server's certificate: the
    client refuses the connection before any credential is sent."""
    wrong = _with_query(_dsns()["owner"], f"sslmode=verify-full&sslrootcert={other_ca}")
    with pytest.raises(DatabaseUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        async with db.connect(wrong):
            pass
    async with db.connect(_dsns()["owner"]) as conn:  # the stack's own CA: accepted
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")


async def test_a_connection_without_tls_is_refused() -> None:
    plain = _with_query(_dsns()["owner"], "sslmode=disable")
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        async with db.connect(plain):
            pass


async def test_a_command_refused_a_privilege_says_so_in_one_line(dsns: dict[str, str]) -> None:
    """``db migrate`` as the webhook's role: the owner's job, refused by the database; one
    line naming the cause, exit 2, the role's password not in it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENDIST_")}
    env |= {"TOKENDIST_DATABASE_URL": dsns["webhook"], "TOKENDIST_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tokendist.cli", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("tokendist: error: InsufficientPrivilegeError:")
    assert "may not do this" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    password = urlsplit(dsns["webhook"]).password
    assert password
    assert password not in done.stdout + done.stderr
