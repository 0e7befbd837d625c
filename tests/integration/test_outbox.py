"""The outbox and its relay against real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import asyncpg
import pytest

from tests.integration import harness
from tokendist.core.errors import NotInTransaction
from tokendist.core.settings import Settings
from tokendist.outbox import enqueue
from tokendist.sim import payments

pytestmark = pytest.mark.integration


def payment(i: int, user: str = "user-1") -> payments.Payment:
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


async def test_enqueue_outside_a_transaction_is_refused(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(NotInTransaction, match="inside the caller's transaction"):
            await enqueue(conn, payment(0).event())
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0


async def test_rolled_back_payment_publishes_nothing_committed_one_publishes_once(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="payment service crashed"):  # noqa: PT012
            async with conn.transaction():
                await enqueue(conn, payment(0).event())
                raise RuntimeError("payment service crashed")
        async with conn.transaction():
            committed = await enqueue(conn, payment(1).event())
    async with harness.relay(settings):
        records = await harness.read_topic(settings, settings.topic, expected=1)
        await asyncio.sleep(1.0)  # room for a wrongly published second message to show up
        records += await harness.read_topic(settings, settings.topic, expected=2, timeout=2)
    event_ids = {json.loads(r.value)["event_id"] for r in records}
    assert event_ids == {str(committed.event_id)}
    assert len(records) == 2  # read twice from the start: the same single message
    assert await harness.count(pool, "SELECT count(*) FROM payment_confirmations") == 1


async def test_same_webhook_five_times_concurrently_yields_one_event(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        await payments.register_user(conn, "user-1", harness.wallet(0))
        await conn.execute(
            "INSERT INTO tokenizations VALUES ('tok-1','prop-1',31337,$1,18,$1)", harness.wallet(1)
        )

    async def deliver() -> bool:
        async with pool.acquire() as conn:
            return (await payments.confirm(conn, payment(7))).created

    created = await asyncio.gather(*(deliver() for _ in range(5)))
    assert sorted(created) == [False, False, False, False, True]
    assert await harness.count(pool, "SELECT count(*) FROM outbox") == 1
    async with harness.relay(settings):
        records = await harness.read_topic(settings, settings.topic, expected=1)
    await asyncio.sleep(0.5)
    ends = await harness.end_offsets(settings)
    assert sum(ends.values()) == 1
    assert records[0].key == b"user-1"
    headers = dict(records[0].headers)
    assert headers["event_type"] == b"PaymentConfirmed"
    assert headers["schema_version"] == b"1"


async def test_killed_leader_mid_batch_loses_nothing_and_keeps_user_order(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    users = [f"user-{u}" for u in range(10)]
    total = 3000
    async with pool.acquire() as conn:
        for i in range(total):
            async with conn.transaction():
                await enqueue(conn, payment(i, users[i % len(users)]).event())
    small_batches = {"TOKENDIST_RELAY_BATCH_SIZE": "50"}
    first = harness.Process(settings, "relay", extra_env=small_batches)
    await harness.wait_until(lambda: _some_published(pool), what="the first relay to publish")
    second = harness.Process(settings, "relay", extra_env=small_batches)
    first.kill()  # SIGKILL: mid-batch, holding the leader lock
    try:
        await harness.wait_until(
            lambda: _all_published(pool), timeout=120, what="the standby to publish the rest"
        )
    finally:
        second.terminate()
    records = await harness.read_topic(settings, settings.topic, expected=total, timeout=60)
    by_event: dict[str, set[bytes]] = defaultdict(set)
    order: dict[str, list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        doc = json.loads(r.value)
        by_event[doc["event_id"]].add(r.value)
        seq = int(doc["data"]["investment_id"].removeprefix("inv-"))
        if seq not in order[doc["data"]["user_id"]]:
            order[doc["data"]["user_id"]].append(seq)
    assert len(by_event) == total, "every committed row reached the topic"
    assert all(len(v) == 1 for v in by_event.values()), "a duplicate is byte-identical"
    for user, seqs in order.items():
        assert seqs == sorted(seqs), f"{user}'s events were reordered"


async def _some_published(pool: asyncpg.Pool) -> bool:
    sql = "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"
    return await harness.count(pool, sql) > 0


async def _all_published(pool: asyncpg.Pool) -> bool:
    return await harness.count(pool, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
