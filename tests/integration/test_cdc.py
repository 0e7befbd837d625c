"""Debezium CDC instead of the relay: the shipped connector configuration (stack/cdc) in a
real Kafka Connect worker, reading the outbox of a real PostgreSQL (wal_level=logical),
into real Kafka, consumed by the real consumer paying on anvil.

Run with ``make test-cdc`` (marked ``cdc``: it needs the Connect jars that ``stack.sh up
--cdc`` installs, and starts a JVM of its own per test)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import structlog
from aiokafka.partitioner import DefaultPartitioner

from tests.integration import harness
from tokendist.bench.cdc_worker import ConnectWorker
from tokendist.core import db
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment
from tokendist.outbox import cdc
from tokendist.sim import payments

pytestmark = [pytest.mark.integration, pytest.mark.cdc]
log = structlog.get_logger("tests.cdc")

SWEEP_TIMEOUT_S = 60.0


@pytest.fixture
async def worker(settings: Settings, tmp_path: Path) -> AsyncIterator[ConnectWorker]:
    stack_dir = os.environ.get("TOKENDIST_STACK_DIR")
    if not stack_dir:
        pytest.fail('TOKENDIST_STACK_DIR not set: eval "$(stack/stack.sh env)"', pytrace=False)
    w = ConnectWorker(
        settings,
        stack_dir=stack_dir,
        home=tmp_path / "connect",
        name=f"cdc_{uuid.uuid4().hex[:12]}",
        rest_port=harness.free_port(),
        # Offsets kept only every 3 s: a kill re-sends up to 3 s of records, which the
        # consumer must drop.
        offset_flush_ms=3000,
    )
    try:
        yield w
    finally:
        await w.stop()
        await w.drop_slot()


async def test_debezium_publishes_what_the_relay_would(
    settings: Settings, pool: asyncpg.Pool, worker: ConnectWorker
) -> None:
    """Key, value, headers and partition byte for byte as the relay's; rows unpublished at
    the switch come through the first snapshot, rows a relay already published do not."""
    async with pool.acquire() as conn:
        await payments.register_user(conn, "user-1", harness.wallet(0))
        await payments.register_user(conn, "user-2", harness.wallet(1))
        await conn.execute(
            "INSERT INTO tokenizations VALUES ('tok-1','prop-1',31337,$1,18,$1)", harness.wallet(2)
        )
        for i in range(3):
            await payments.confirm(conn, harness_payment(i, "user-1"))
        # As if a relay had published the first row before the switch to CDC.
        await conn.execute("UPDATE outbox SET published_at = now() WHERE seq = 1")
    await worker.start()
    async with pool.acquire() as conn:
        for i in range(3, 6):
            await payments.confirm(conn, harness_payment(i, "user-2"))
        # The SQL producer (migration 0007) goes through the same path.
        await conn.execute(
            "SELECT enqueue_payment_confirmed(p_user_id => 'user-2', p_investment_id => 'inv-6',"
            " p_tokenization_id => 'tok-1', p_property_id => 'prop-1', p_tokens => '7',"
            " p_amount_minor => 700, p_currency => 'NGN', p_wallet_address => NULL,"
            " p_provider => 'paystack', p_provider_reference => 'ref-6')"
        )
    rows = await pool.fetch(
        "SELECT aggregateid, payload::text AS payload, headers::text AS headers FROM outbox"
        " WHERE seq > 1 ORDER BY seq"
    )
    records = await harness.read_topic(settings, settings.topic, expected=len(rows), timeout=60)
    await asyncio.sleep(1.0)  # room for a wrongly published extra record to show up
    assert sum((await harness.end_offsets(settings)).values()) == len(rows) == 6
    by_event = {json.loads(r.value)["event_id"]: r for r in records}
    partitions = sorted((await harness.end_offsets(settings)).keys())
    for row in rows:
        record = by_event[json.loads(row["payload"])["event_id"]]
        key = row["aggregateid"].encode()
        assert record.key == key
        assert record.value == row["payload"].encode()
        assert list(record.headers) == [
            (k, str(v).encode()) for k, v in json.loads(row["headers"]).items()
        ]
        assert record.partition == DefaultPartitioner()(key, partitions, partitions)

    async with db.connect(settings.database_url) as conn:
        swept = await cdc.sweep(
            db.Database(conn), worker.name, timeout_s=SWEEP_TIMEOUT_S, retention_s=3600
        )
    assert swept == cdc.Sweep(marked=6, pruned=0)
    assert await harness.count(pool, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_payments_through_debezium_exactly_once_across_a_worker_kill(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment, worker: ConnectWorker
) -> None:
    n, users = 300, 20
    expected: dict[str, int] = {}
    async with pool.acquire() as conn:
        for u in range(users):
            await payments.register_user(conn, f"user-{u}", harness.wallet(u))
    await worker.start()

    async def produce() -> None:
        async with pool.acquire() as conn:
            for i in range(n):
                p = harness.payment(tokenization, i, i % users)
                await payments.confirm(conn, p)
                wallet = harness.wallet(i % users)
                expected[wallet] = expected.get(wallet, 0) + p.tokens
                await asyncio.sleep(0.01)  # a stream, so the kill lands mid-way

    async with harness.consumer(settings):
        producing = asyncio.create_task(produce(), name="producer")
        await harness.wait_until(
            lambda: _on_topic_at_least(settings, n // 3), timeout=120, what="records on the topic"
        )
        await worker.kill()  # SIGKILL mid-stream: offsets since the last flush are lost
        await asyncio.sleep(2.0)  # payments keep being confirmed while CDC is down
        await worker.start()
        await producing
        await harness.wait_until(
            lambda: _credited_is(pool, n), timeout=300, what=f"{n} credited distributions"
        )

    records = await harness.read_topic(settings, settings.topic, expected=n, timeout=60)
    copies = Counter(json.loads(r.value)["event_id"] for r in records)
    assert len(copies) == n, "every committed payment reached the topic"
    log.info("cdc_kill_resent", records=len(records), resent=len(records) - n)
    paid: dict[str, int] = {}
    for to, amount in await harness.paid_to(settings, tokenization):
        paid[to] = paid.get(to, 0) + amount
    assert len(await harness.paid_to(settings, tokenization)) == n, "one payout per payment"
    assert paid == {w.lower(): t for w, t in expected.items()}
    holdings = {
        r["user_id"]: int(r["balance"])
        for r in await pool.fetch("SELECT user_id, balance FROM token_holdings")
    }
    assert holdings == {f"user-{u}": expected[harness.wallet(u)] for u in range(users)}
    async with db.connect(settings.database_url) as session:
        swept = await cdc.sweep(
            db.Database(session), worker.name, timeout_s=SWEEP_TIMEOUT_S, retention_s=3600
        )
    assert swept.marked == n
    report = await harness.run_verify(settings, pool)
    assert report.ok, report.render()


def harness_payment(i: int, user: str) -> payments.Payment:
    return payments.Payment(
        user_id=user,
        investment_id=f"inv-{i}",
        tokenization_id="tok-1",
        property_id="prop-1",
        tokens=10**18 * (i + 1),
        amount_minor=100_000 * (i + 1),
        reference=f"ref-{i}",
        wallet_address=harness.wallet(0),
    )


async def _on_topic_at_least(settings: Settings, n: int) -> bool:
    return sum((await harness.end_offsets(settings)).values()) >= n


async def _credited_is(pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) >= n
