"""verify and reconcile read the Distributor v2's payouts per payment from the chain's
logs: distributions are written here as the consumer would leave them, the payouts are
made by batches sent directly."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from tests.integration.test_contracts import Sender, new_wallets, operator
from tokendist.consumer import contracts
from tokendist.consumer.chain import Chain
from tokendist.consumer.repository import Repository
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops.deploy import Deployment
from tokendist.ops.reconcile import Reconciler
from tokendist.ops.repository import ToolRepository
from tokendist.ops.verify import check_all

pytestmark = pytest.mark.integration

CHAIN_CHECK = "every on-chain distribution has exactly one matching payout on-chain"


async def record(
    pool: asyncpg.Pool, tk: Deployment, investment: str, to: str, tokens: int, *, state: str
) -> uuid.UUID:
    """A distribution in ``state``, as the consumer records it once it has signed."""
    event_id = uuid.uuid4()
    await pool.execute(
        """
        INSERT INTO distributions (event_id, investment_id, payment_id, user_id,
            tokenization_id, tokens, payload, state, recipient, sender, nonce, tx_hash,
            block_number)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12)
        """,
        event_id,
        investment,
        "0x" + contracts.payment_id(investment).hex(),
        f"user-{investment}",
        tk.tokenization_id,
        tokens,
        json.dumps({}),
        state,
        to,
        to,
        "0x" + "ee" * 32,  # a batch whose own receipt says nothing about this payment
        1 if state == "confirmed" else None,
    )
    return event_id


async def pay(
    sender: Sender, tk: Deployment, first: int, batch: list[tuple[str, str, int]]
) -> None:
    payments = [(contracts.payment_id(inv), to, amount) for inv, to, amount in batch]
    receipt = await sender.send(tk.distributor_address, contracts.batch_calldata(first, payments))
    assert receipt["status"] == 1


async def test_verify_matches_each_distribution_with_its_payout(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    sender = await operator(settings)
    chain = Chain(settings.require_rpc(), LocalSigner(settings.require_chain()[1]))
    a, b, c, d = new_wallets(4)
    try:
        await record(pool, tokenization, "inv-a", a, 10, state="confirmed")
        await record(pool, tokenization, "inv-b", b, 20, state="confirmed")
        await record(pool, tokenization, "inv-c", c, 30, state="confirmed")
        await pay(sender, tokenization, 0, [("inv-a", a, 10), ("inv-b", b, 20)])
        report = await check_all(ToolRepository(pool), chain)
        assert [c.problems for c in report.checks if c.name == CHAIN_CHECK] == [
            [f"event {e} (confirmed): 0 payouts" for e in await _events(pool, "inv-c")]
        ]
        # inv-c paid the wrong amount; inv-d paid without any distribution.
        await pay(sender, tokenization, 2, [("inv-c", c, 31), ("inv-d", d, 40)])
        report = await check_all(ToolRepository(pool), chain)
        (problems,) = [c.problems for c in report.checks if c.name == CHAIN_CHECK]
        (event_c,) = await _events(pool, "inv-c")
        assert problems == [
            f"event {event_c}: chain pays 31 to {c.lower()}, expected 30 to {c}",
            f"payout of payment 0x{contracts.payment_id('inv-d').hex()} has no signed distribution",
        ]
    finally:
        await sender.close()
        await chain.close()


async def test_reconcile_finds_the_payout_by_payment_not_by_its_own_transaction(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    """A submitted distribution whose own batch skipped it (already paid) is settled from
    the transaction that did pay it; one that nothing paid is left alone."""
    sender = await operator(settings)
    a, b = new_wallets(2)
    paid = await record(pool, tokenization, "inv-a", a, 10, state="submitted")
    await record(pool, tokenization, "inv-b", b, 20, state="submitted")
    chain = Chain(settings.require_rpc(), LocalSigner(settings.require_chain()[1]))
    try:
        await pay(sender, tokenization, 0, [("inv-a", a, 10)])
        one = settings.chain_check().model_copy(update={"confirmations": 1})
        rec = Reconciler(Repository(pool), ToolRepository(pool), chain, one)
        result = await rec.run(grace_s=0, dry_run=True)
        assert result.credited == [str(paid)]
    finally:
        await sender.close()
        await chain.close()


async def _events(pool: asyncpg.Pool, investment: str) -> list[uuid.UUID]:
    rows = await pool.fetch(
        "SELECT event_id FROM distributions WHERE investment_id = $1", investment
    )
    return [r["event_id"] for r in rows]
