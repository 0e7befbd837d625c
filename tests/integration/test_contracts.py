"""The Distributor is the last line of defence: even a second signed transaction for the
same payment cannot pay twice, and only the operator may pay at all."""

from __future__ import annotations

import asyncpg
import pytest
from web3 import AsyncWeb3

from tests.integration import harness
from tokendist.consumer import contracts
from tokendist.consumer.chain import Chain
from tokendist.core.errors import ChainRejected
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployment

pytestmark = pytest.mark.integration


async def wait_receipt(chain: Chain, tx_hash: str) -> bool:
    receipt = None

    async def mined() -> bool:
        nonlocal receipt
        receipt = await chain.receipt(tx_hash)
        return receipt is not None

    await harness.wait_until(mined, what=f"receipt of {tx_hash}")
    assert receipt is not None
    return receipt.succeeded


async def test_a_second_signed_payout_for_the_same_payment_reverts_on_chain(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    chain = Chain(*settings.require_chain())
    try:
        await chain.chain_id()
        payment = contracts.payment_id("inv-1")
        data = chain.distribute_calldata(payment, harness.wallet(0), 10**18)
        gas = await chain.estimate(tokenization.distributor_address, data)
        nonce = await chain.nonce(pending=True)
        fee = 2 * await chain.base_fee() + 10**9
        sign = [
            chain.sign(
                to=tokenization.distributor_address,
                data=data,
                gas=gas * 2,
                nonce=nonce + i,
                max_fee=fee,
                priority_fee=10**9,
            )
            for i in range(2)
        ]
        for signed in sign:  # the bug we guard against: two transfers signed for one payment
            await chain.send_raw(signed.raw)
        assert await wait_receipt(chain, sign[0].tx_hash)
        assert not await wait_receipt(chain, sign[1].tx_hash), "the second one reverted"
        with pytest.raises(ChainRejected, match="AlreadyDistributed"):
            await chain.estimate(tokenization.distributor_address, data)
        assert await chain.token_balance(tokenization.token_address, harness.wallet(0)) == 10**18
        assert len(await harness.paid_to(settings, tokenization)) == 1
    finally:
        await chain.close()


async def test_only_the_operator_may_distribute(
    settings: Settings, pool: asyncpg.Pool, tokenization: Deployment
) -> None:
    rpc_url, deployer_key = settings.require_deployer()
    stranger = Chain(rpc_url, deployer_key)  # owns the contracts, yet is not the operator
    try:
        data = stranger.distribute_calldata(contracts.payment_id("inv-9"), harness.wallet(1), 1)
        with pytest.raises(ChainRejected, match="NotOperator"):
            await stranger.estimate(tokenization.distributor_address, data)
    finally:
        await stranger.close()
    assert AsyncWeb3.is_checksum_address(tokenization.distributor_address)
