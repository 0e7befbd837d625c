"""The chain alone: signed ``distribute`` transactions sent and mined per second, with no
database or Kafka, through the consumer's own ``Chain`` adapter.

A Distributor of its own, operated by a key of its own (the consumers' nonces must see
only the consumers' transactions). ``window`` workers each take the next nonce, sign,
send and poll for the receipt every ``receipt_poll_s`` as a consumer does; so at most
``window`` transactions are unmined at once: with the consumer's in-flight cap as the
window, this is the rate one operator key can reach on this node under that cap.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time

from eth_typing import HexStr

from tokendist.bench.results import ChainRate, Rate
from tokendist.bench.sandbox import TOKEN_SUPPLY, address_of, funded_key
from tokendist.consumer.chain import Chain
from tokendist.consumer.processor import GAS_MARGIN_PERCENT
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployer


async def deploy(settings: Settings) -> tuple[Settings, str]:
    """(settings whose operator key is a fresh one, its funded Distributor's address)."""
    rpc_url, deployer_key = settings.require_deployer()
    operator = await funded_key(rpc_url)
    deployer = Deployer(rpc_url, deployer_key)
    try:
        _, distributor = await deployer.deploy(
            operator=address_of(operator),
            name="Bench Chain Stage",
            symbol="BCHN",
            decimals=18,
            supply=TOKEN_SUPPLY,
            fund=TOKEN_SUPPLY,
        )
    finally:
        await deployer.close()
    return settings.model_copy(update={"operator_key": operator}), distributor


async def sent_and_mined(
    settings: Settings, distributor: str, count: int, window: int
) -> ChainRate:
    rpc_url, key = settings.require_chain()
    chain = Chain(rpc_url, key)
    try:
        await chain.chain_id()  # sign() needs it cached
        recipient = address_of(await funded_key(rpc_url))
        first_nonce = await chain.nonce(pending=True)
        gas = await chain.estimate(distributor, _calldata(chain, recipient, 0))
        gas_limit = gas * (100 + GAS_MARGIN_PERCENT) // 100
        tip = settings.priority_fee_wei
        max_fee = min(2 * await chain.base_fee() + tip, settings.max_fee_wei)
        numbers = itertools.count()
        took: list[float] = []

        async def worker() -> None:
            while (i := next(numbers)) < count:
                began = time.perf_counter()
                signed = chain.sign(
                    to=distributor,
                    data=_calldata(chain, recipient, i),
                    gas=gas_limit,
                    nonce=first_nonce + i,
                    max_fee=max_fee,
                    priority_fee=tip,
                )
                await chain.send_raw(signed.raw)
                # Over HTTP the node pushes nothing: polling is how the consumer waits too.
                while (receipt := await chain.receipt(signed.tx_hash)) is None:  # noqa: ASYNC110
                    await asyncio.sleep(settings.receipt_poll_s)
                if not receipt.succeeded:
                    raise RuntimeError(f"chain stage: {signed.tx_hash} reverted")
                took.append(time.perf_counter() - began)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(window)))
        seconds = time.perf_counter() - start
    finally:
        await chain.close()
    return ChainRate(
        rate=Rate.of(f"distribute signed, sent and mined, ≤ {window} unmined", count, seconds),
        window=window,
        mean_ms=int(1000 * sum(took) / len(took)) if took else 0,
    )


def _calldata(chain: Chain, recipient: str, i: int) -> HexStr:
    """A payment id of its own per transaction: the Distributor refuses a repeated one."""
    payment_id = os.urandom(24) + i.to_bytes(8, "big")
    return chain.distribute_calldata(payment_id, recipient, 10**18 + i)
