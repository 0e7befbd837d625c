"""Fee spikes (issue 15, part 3) on a chain of the test's own (a private anvil mining a
block per transaction, so the base fee stays where the test puts it and no one else's
transactions move it): while twice the base fee plus the tip is above
``TOKENDIST_MAX_FEE_WEI`` nothing is signed and ``tokendist_fee_above_cap`` is 1; once the
base fee falls every payment is paid, once, and no attempt ever offered more than the
cap."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest
from eth_account import Account
from prometheus_client import REGISTRY

from tests.integration import harness
from tokendist.bench import anvil
from tokendist.core.errors import ChainUnavailable
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployer

pytestmark = pytest.mark.integration

N = 12
TIP = 10**9
CAP = 50 * 10**9
SPIKE = 100 * 10**9  # twice this plus the tip is far above the cap
CALM = 10**9


async def set_base_fee(url: str, wei: int) -> None:
    """The next block's base fee, and that block mined: what the consumer reads now."""
    await harness.rpc(url, "anvil_setNextBlockBaseFeePerGas", [hex(wei)])
    await harness.rpc(url, "evm_mine", [])


async def waiting_at_the_cap(pool: asyncpg.Pool) -> bool:
    """Every payment reached the consumer and signing was refused for the fee."""
    claimed = await harness.count(pool, "SELECT count(*) FROM distributions")
    return claimed == N and REGISTRY.get_sample_value("tokendist_fee_above_cap") == 1


async def test_nothing_is_signed_above_the_fee_cap_and_everything_is_paid_after(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    binary = anvil.find_binary(None, os.environ.get("TOKENDIST_STACK_DIR"))
    async with anvil.started(binary, None, tmp_path / "anvil.log") as url:
        s = settings.model_copy(
            update={"rpc_url": url, "max_fee_wei": CAP, "priority_fee_wei": TIP}
        )
        await harness.fund_keys(s, url)
        tk = await harness.deploy(
            s, pool, tokenization_id="tok-fees", property_id="prop-fees", name="Fee Spike",
            symbol="FEE", supply=10**30,
        )  # fmt: skip
        await set_base_fee(url, SPIKE)
        expected = await harness.confirm_payments(pool, tk, N)
        async with harness.relay(s), harness.consumer(s):
            await harness.wait_until(lambda: waiting_at_the_cap(pool), what="signing paused")
            assert await harness.count(pool, "SELECT count(*) FROM chain_transactions") == 0
            assert await harness.count(pool, "SELECT count(*) FROM batches") == 0
            await set_base_fee(url, CALM)
            await harness.wait_until(lambda: credited_is(pool), what="all credited")
            assert REGISTRY.get_sample_value("tokendist_fee_above_cap") == 0
        offered = await pool.fetchval("SELECT max(max_fee_per_gas) FROM chain_transactions")
        assert 0 < offered <= CAP
        payouts = await harness.payouts(s, tk)
        assert len(payouts) == len({p.payment_id for p in payouts}) == N
        paid: dict[str, int] = {}
        for p in payouts:
            paid[p.to] = paid.get(p.to, 0) + p.amount
        assert paid == {w.lower(): t for w, t in expected.items()}
        report = await harness.run_verify(s, pool)
        assert report.ok, report.render()


async def credited_is(pool: asyncpg.Pool) -> bool:
    return await harness.credited(pool) == N


async def test_an_operator_transaction_built_before_a_base_fee_rise_is_an_outage_not_a_crash(
    settings: Settings, tmp_path: Path
) -> None:
    """`chain deploy`, `keys`, `kyc approve` fill the fee in when they build a call; a
    base fee that rose before it is sent makes the node refuse it. That is a moment to
    try again (ChainUnavailable: one line, exit 1; the fault campaign's approvals retry
    it), not an unmapped RPC error; and nothing was sent."""
    binary = anvil.find_binary(None, os.environ.get("TOKENDIST_STACK_DIR"))
    async with anvil.started(binary, None, tmp_path / "anvil.log") as url:
        _, key = settings.require_deployer()
        sender = Account.from_key(key.get_secret_value()).address
        await harness.fund(url, sender)
        deployer = Deployer(url, key)
        try:
            before = await deployer.w3.eth.get_transaction_count(sender)
            built = {"to": sender, "value": 1, "maxFeePerGas": 2 * CALM, "maxPriorityFeePerGas": 1}
            await set_base_fee(url, SPIKE)
            with pytest.raises(ChainUnavailable, match="base fee"):
                await deployer._transact(dict(built))
            assert await deployer.w3.eth.get_transaction_count(sender, "pending") == before
            await set_base_fee(url, CALM)
            receipt = await deployer._transact(dict(built))
            assert receipt["status"] == 1
        finally:
            await deployer.close()
