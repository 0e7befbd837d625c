"""Payments through outbox, relay, Kafka and consumer to the chain and the books."""

from __future__ import annotations

import asyncpg
import pytest

from tests.integration import harness
from tokendist.consumer import contracts
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment

pytestmark = pytest.mark.integration


async def test_payments_flow_to_exactly_one_transfer_each(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    n = 500
    expected = await harness.confirm_payments(pool, tokenization, n)
    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(
            lambda: _credited_is(pool, n), timeout=240, what=f"{n} credited distributions"
        )
    payouts = await harness.payouts(settings, tokenization)
    assert len(payouts) == n
    assert len({p.payment_id for p in payouts}) == n  # each payment paid once
    paid: dict[str, int] = {}
    for p in payouts:
        paid[p.to] = paid.get(p.to, 0) + p.amount
    assert paid == {w.lower(): t for w, t in expected.items()}
    transfers = await harness.rpc(
        settings.rpc_url or "",
        "eth_getLogs",
        [
            {
                "address": tokenization.token_address,
                "fromBlock": "0x0",
                "topics": [
                    contracts.TRANSFER_TOPIC,
                    "0x" + bytes(12).hex() + tokenization.distributor_address[2:].lower(),
                ],
            }
        ],
    )
    assert len(transfers) == n
    holdings = {
        r["user_id"]: int(r["balance"])
        for r in await pool.fetch("SELECT user_id, balance FROM token_holdings")
    }
    assert holdings == {f"user-{u}": expected[harness.wallet(u)] for u in range(25)}
    assert (
        await harness.count(
            pool, "SELECT count(*) FROM investments WHERE status = 'tokens_distributed'"
        )
        == n
    )
    report = await harness.run_verify(settings, pool)
    assert report.ok, report.render()


async def _credited_is(pool: asyncpg.Pool, n: int) -> bool:
    return await harness.credited(pool) >= n
