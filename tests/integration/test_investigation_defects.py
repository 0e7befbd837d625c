"""One test per defect of the investigation report (shared/investigation.md): each
failure of the system we replace, shown impossible here against the real services."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import harness
from tokendist.core import kafka
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment
from tokendist.sim import payments

pytestmark = pytest.mark.integration

A, B = 100 * 10**18, 50 * 10**18


async def credited_count_is(pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) == n


async def test_defect_1_existing_holdings_are_added_to_not_replaced(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    async with harness.relay(settings), harness.consumer(settings):
        await harness.pay(pool, harness.payment(tokenization, 1, user=0, tokens=A))
        await harness.wait_until(lambda: credited_count_is(pool, 1), what="first credit")
        assert await harness.holding(pool, 0) == A
        await harness.pay(pool, harness.payment(tokenization, 2, user=0, tokens=B))
        await harness.wait_until(lambda: credited_count_is(pool, 2), what="second credit")
    assert await harness.holding(pool, 0) == A + B
    assert (await harness.run_verify(settings, pool)).ok


async def test_defect_2_two_consumers_given_the_same_events_concurrently_transfer_once(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """Two consumer groups on one topic: every event is handled twice, at the same time."""
    n = 60
    expected = await harness.confirm_payments(pool, tokenization, n, users=6)
    twin = settings.model_copy(update={"consumer_group": settings.consumer_group + ".twin"})
    async with harness.relay(settings), harness.consumer(settings), harness.consumer(twin):
        await harness.wait_until(lambda: credited_count_is(pool, n), timeout=120, what="credits")
        await asyncio.sleep(2)  # both groups finish reading; a double would show up now
    paid = await harness.paid_to(settings, tokenization)
    assert len(paid) == n
    assert sum(a for _, a in paid) == sum(expected.values())
    # Each payment signed into exactly one batch, by one of the two groups.
    assert await harness.count(pool, "SELECT sum(size) FROM batches") == n
    assert await harness.count(pool, "SELECT count(*) FROM chain_transactions") == (
        await harness.count(pool, "SELECT count(*) FROM batches")
    )
    assert (await harness.run_verify(settings, pool)).ok


async def test_defect_3_earlier_holdings_do_not_shrink_the_next_transfer(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """The old 'send only the delta against the on-chain balance' paid 0 here."""
    async with harness.relay(settings), harness.consumer(settings):
        await harness.pay(pool, harness.payment(tokenization, 1, user=0, tokens=A))
        await harness.wait_until(lambda: credited_count_is(pool, 1), what="first credit")
        await harness.pay(pool, harness.payment(tokenization, 2, user=0, tokens=B))  # B < A
        await harness.wait_until(lambda: credited_count_is(pool, 2), what="second credit")
    wallet = harness.wallet(0).lower()
    assert await harness.paid_to(settings, tokenization) == [(wallet, A), (wallet, B)]
    assert (await harness.run_verify(settings, pool)).ok


async def test_defect_4_same_payment_confirmed_five_times_transfers_once(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    p = harness.payment(tokenization, 1, user=0, tokens=A)
    async with pool.acquire() as conn:
        await payments.register_user(conn, p.user_id, p.wallet_address)

    async def webhook() -> None:
        async with pool.acquire() as conn:
            await payments.confirm(conn, p)

    await asyncio.gather(*(webhook() for _ in range(5)))
    async with harness.relay(settings):
        (record,) = await harness.read_topic(settings, settings.topic, expected=1)
    producer = AIOKafkaProducer(**kafka.connection(settings))
    await producer.start()
    try:  # and the same message redelivered four more times by the broker side
        for _ in range(4):
            await producer.send_and_wait(
                settings.topic, record.value, key=record.key, partition=record.partition
            )
    finally:
        await producer.stop()
    async with harness.consumer(settings):
        await harness.wait_until(lambda: credited_count_is(pool, 1), what="the credit")
        await harness.wait_until(lambda: harness.committed_to_end(settings), what="all read")
    assert await harness.paid_to(settings, tokenization) == [(harness.wallet(0).lower(), A)]
    assert await harness.holding(pool, 0) == A


async def test_defect_5_invariant_checks_running_beside_the_consumer_cause_no_duplicate(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    n = 80
    expected = await harness.confirm_payments(pool, tokenization, n, users=8)
    checks = 0
    async with harness.relay(settings), harness.consumer(settings):
        while await harness.credited(pool) < n:
            await harness.run_verify(settings, pool, grace_s=3600)  # read-only, concurrently
            checks += 1
    assert checks > 1
    paid = await harness.paid_to(settings, tokenization)
    assert len(paid) == n
    assert sum(a for _, a in paid) == sum(expected.values())
    assert (await harness.run_verify(settings, pool)).ok


async def test_defect_6_failed_final_write_after_transfer_never_transfers_again(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """The credit transaction fails (a real PostgreSQL error) after the tokens moved.
    (Here it is retried until the error is fixed: parking it after bounded attempts is
    ``test_hardening``'s.)"""
    settings = settings.model_copy(update={"park_after_errors": 1000})
    await harness.fail_credits(pool, of_user="user-0")
    async with harness.relay(settings), harness.consumer(settings):
        await harness.pay(pool, harness.payment(tokenization, 1, user=0, tokens=A))
        await harness.wait_until(
            lambda: _state_is(pool, "inv-1", "confirmed"), what="transfer confirmed"
        )
        await asyncio.sleep(3)  # several failed credit attempts, each retried
        assert await harness.state_of(pool, "inv-1") == "confirmed"
        assert await harness.holding(pool, 0) == 0
        await pool.execute("DELETE FROM fail_credit")
        await harness.wait_until(lambda: credited_count_is(pool, 1), what="the credit")
    assert await harness.paid_to(settings, tokenization) == [(harness.wallet(0).lower(), A)]
    assert await harness.count(pool, "SELECT count(*) FROM chain_transactions") == 1
    assert await harness.holding(pool, 0) == A


async def _state_is(pool: asyncpg.Pool, investment: str, state: str) -> bool:
    return await harness.state_of(pool, investment) == state


async def test_defect_7_partially_processed_event_resumes_instead_of_restarting(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """Killed right after signing (stored, never broadcast): the restart sends the very
    same transaction; nothing is re-signed and no second transfer exists."""
    await harness.pay(pool, harness.payment(tokenization, 1, user=0, tokens=A))
    async with harness.relay(settings):
        crashing = harness.Process(
            settings, "consume", extra_env={"TOKENDIST_FAILPOINTS": "after:signed"}
        )
        await asyncio.to_thread(crashing.proc.wait, 60)
        assert crashing.proc.returncode == -9
        assert await harness.state_of(pool, "inv-1") == "signed"
        (stored,) = await pool.fetch("SELECT tx_hash FROM chain_transactions")
        async with harness.consumer(settings):
            await harness.wait_until(lambda: credited_count_is(pool, 1), what="the credit")
    assert await pool.fetchval("SELECT tx_hash FROM distributions") == stored["tx_hash"]
    assert await harness.count(pool, "SELECT count(*) FROM chain_transactions") == 1
    assert await harness.paid_to(settings, tokenization) == [(harness.wallet(0).lower(), A)]
