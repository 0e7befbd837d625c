"""The periodic gauges (``consumer/gauges.py``) read from real PostgreSQL and anvil, after a
real relay and consumer credited some payments and parked others awaiting KYC."""

from __future__ import annotations

import asyncpg
import pytest
from prometheus_client import REGISTRY

from tests.integration import harness
from tokendist.consumer.chain import Chain
from tokendist.consumer.gauges import Gauges, GaugeStore
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops.deploy import Deployment

pytestmark = pytest.mark.integration

FUNDED = 10**28  # what the tokenization fixture moves into the Distributor
HOUR = 3600


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_gauges_export_parked_payments_and_each_distributors_tokens_against_the_hour(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    paid = [harness.payment(tokenization, i, user=i) for i in range(3)]
    parked = [harness.payment(tokenization, 10 + i, user=10 + i) for i in range(2)]
    for p in paid:
        await harness.pay(pool, p)
    for p in parked:
        await harness.pay(pool, p, kyc="pending")

    async def settled() -> bool:
        states = await pool.fetch("SELECT state, count(*) AS n FROM distributions GROUP BY 1")
        return {r["state"]: r["n"] for r in states} == {"credited": 3, "awaiting_kyc": 2}

    async with harness.relay(settings), harness.consumer(settings):
        await harness.wait_until(settled, what="3 credited, 2 parked")

    # One payment of each kind from long ago: paid two hours back (outside the hour's
    # need), parked two hours back (the oldest).
    await pool.execute(
        "UPDATE distributions SET created_at = now() - interval '2 hours' WHERE investment_id = $1",
        paid[0].investment_id,
    )
    await pool.execute(
        "UPDATE distributions SET updated_at = now() - interval '2 hours' WHERE investment_id = $1",
        parked[0].investment_id,
    )
    # A tokenization of another chain: not this node's to read (its addresses hold no code).
    await pool.execute(
        "INSERT INTO tokenizations"
        " (id, property_id, chain_id, token_address, decimals, distributor_address)"
        " VALUES ('elsewhere', 'p', 1, $1, 18, $1)",
        "0x" + "11" * 20,
    )

    rpc_url, key = settings.require_chain()
    chain = Chain(rpc_url, LocalSigner(key))
    try:
        await Gauges(GaugeStore(pool), chain).tick()
    finally:
        await chain.close()

    tok = tokenization.tokenization_id
    assert sample("tokendist_parked_payments") == 2
    oldest = sample("tokendist_parked_oldest_seconds")
    assert oldest is not None
    assert 2 * HOUR <= oldest < 3 * HOUR
    spent = sum(p.tokens for p in paid)
    # Gauges are floats: compared with the exact figure rounded the same way.
    assert sample("tokendist_distributor_token_balance", tokenization=tok) == float(FUNDED - spent)
    # Received within the hour, credited or parked alike; not the payment of two hours ago.
    hour = sum(p.tokens for p in paid[1:] + parked)
    assert sample("tokendist_tokens_received_last_hour", tokenization=tok) == float(hour)
    assert sample("tokendist_distributor_token_balance", tokenization="elsewhere") is None
