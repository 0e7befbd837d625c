"""The chain alone: signed ``distributeBatch`` transactions sent and mined, with no database
or Kafka, through the consumer's own ``Chain`` adapter and calldata encoder.

A Distributor of its own, operated by ``keys`` keys of its own (the consumers' nonces
must see only the consumers' transactions). Each key has ``max_inflight_per_sender``
workers; a worker takes the next batch of ``batch_max_size`` payments, the key's next
nonce, signs, sends and polls for the receipt every ``receipt_poll_s`` as a consumer
does: so at most ``keys x cap`` batches are unmined at once, the consumer's bound.

Gas per payment comes from the receipts (``gasUsed`` ÷ payments in the batch), in two
runs over the same recipients: first each is a new holder (its token balance slot is
written from zero, the expensive case), then each already holds tokens.

``deploy_trex``: the same on an ERC-3643 (T-REX) token, whose every transfer also asks
the identity registry (the recipient's identity, its KYC claim, the claim issuer) and
the compliance. Each recipient gets an ONCHAINID of its own with a KYC claim, as ``kyc
approve`` makes them: one shared identity would be read warm (EIP-2929) by every
transfer after a batch's first and understate the gas by about a third. Thousands of
identities are made in a few blocks: each step's transactions signed under consecutive
nonces and sent at once, then their receipts awaited.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

from eth_typing import HexStr
from web3.contract.async_contract import AsyncContractFunction

from tokendist.bench import sandbox
from tokendist.bench.results import ChainRate, Rate
from tokendist.consumer import contracts
from tokendist.consumer.batching.gatherer import GAS_MARGIN_FIXED, GAS_MARGIN_PERCENT
from tokendist.consumer.chain import Chain
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner
from tokendist.ops.deploy import Deployer
from tokendist.ops.trex import Trex

AMOUNT = 10**18
COUNTRY = 566
REGISTER_CHUNK = 100  # identities per batchRegisterIdentity: well under a block's gas


@dataclass(frozen=True, slots=True)
class Stage:
    """What the runs share: the settings (their key pool) and the Distributor."""

    settings: Settings
    distributor: str


async def deploy(settings: Settings, keys: int) -> Stage:
    """A funded Distributor of its own, every one of ``keys`` fresh keys its operator."""
    own = await sandbox.with_keys(settings, keys)
    rpc_url, deployer_key = own.require_deployer()
    _, secrets = own.require_keys()
    deployer = Deployer(rpc_url, deployer_key)
    try:
        _, distributor = await deployer.deploy(
            operator=[sandbox.address_of(k) for k in secrets],
            name="Bench Chain Stage",
            symbol="BCHN",
            decimals=18,
            supply=sandbox.TOKEN_SUPPLY,
            fund=sandbox.TOKEN_SUPPLY,
        )
    finally:
        await deployer.close()
    return Stage(own, distributor)


async def deploy_trex(settings: Settings, keys: int, recipients: list[str]) -> Stage:
    """A T-REX suite and its funded Distributor, ``keys`` fresh keys its operators, and
    every one of ``recipients`` a verified investor of it."""
    own = await sandbox.with_keys(settings, keys)
    rpc_url, deployer_key = own.require_deployer()
    _, secrets = own.require_keys()
    trex = Trex(rpc_url, deployer_key)
    try:
        platform = await trex.deploy_platform()
        suite = await trex.deploy_suite(
            platform=platform,
            operators=[sandbox.address_of(k) for k in secrets],
            name="Bench Chain Stage T-REX",
            symbol="BTRX",
            decimals=18,
            fund=sandbox.TOKEN_SUPPLY,
            country=COUNTRY,
        )
        await _sent_at_once(trex, [trex.create_identity(platform, w) for w in recipients])
        factory = trex.contract("IdFactory", platform.id_factory).functions
        identities = [str(await trex.read(factory.getIdentity(w))) for w in recipients]
        await _sent_at_once(
            trex, [trex.add_kyc_claim(i, platform.claim_issuer) for i in identities]
        )
        registry = trex.contract("IdentityRegistry", suite.identity_registry).functions
        await _sent_at_once(
            trex,
            [
                registry.batchRegisterIdentity(
                    recipients[start : start + REGISTER_CHUNK],
                    identities[start : start + REGISTER_CHUNK],
                    [COUNTRY] * len(recipients[start : start + REGISTER_CHUNK]),
                )
                for start in range(0, len(recipients), REGISTER_CHUNK)
            ],
        )
    finally:
        await trex.close()
    return Stage(own, suite.distributor)


async def _sent_at_once(trex: Trex, calls: list[AsyncContractFunction]) -> None:
    """Every call from the deployer under consecutive nonces, sent before any is mined."""
    w3, me = trex.w3, trex.account.address
    first = await w3.eth.get_transaction_count(me, "pending")
    chain_id = await w3.eth.chain_id
    sent = []
    for nonce, call in enumerate(calls, start=first):
        params: Any = {"from": me, "nonce": nonce, "chainId": chain_id}
        tx: dict[str, Any] = dict(await call.build_transaction(params))
        signed = trex.account.sign_transaction(tx)
        sent.append(await w3.eth.send_raw_transaction(signed.raw_transaction))
    for tx_hash in sent:
        receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=300)
        if receipt["status"] != 1:
            raise RuntimeError(f"chain stage: identity transaction {tx_hash.hex()} reverted")


def batches_of(recipients: list[str], size: int, first_index: int) -> list[tuple[int, list[str]]]:
    """(first index, recipients) of each batch: indices contiguous, as the gatherer takes them."""
    return [
        (first_index + start, recipients[start : start + size])
        for start in range(0, len(recipients), size)
    ]


def calldata(first_index: int, recipients: list[str]) -> HexStr:
    """A payment id of its own per payment: the Distributor skips a repeated one."""
    return contracts.batch_calldata(
        first_index, [(os.urandom(32), to, AMOUNT + i) for i, to in enumerate(recipients)]
    )


async def sent_and_mined(
    stage: Stage, what: str, recipients: list[str], first_index: int
) -> ChainRate:
    """``recipients`` paid once each, in batches from ``first_index`` on."""
    settings = stage.settings
    rpc_url, secrets = settings.require_keys()
    keys = [Chain(rpc_url, LocalSigner(secret)) for secret in secrets]
    cap = settings.max_inflight_per_sender
    work = batches_of(recipients, settings.batch_max_size, first_index)
    try:
        for key in keys:
            await key.chain_id()  # sign() needs it cached
        gas_limit, max_fee, tip = await _prices(settings, keys[0], stage.distributor, work[0])
        nonces = {k.sender: itertools.count(await k.nonce(pending=True)) for k in keys}
        todo = iter(work)
        took: list[float] = []
        gas_used: list[int] = []

        async def worker(key: Chain) -> None:
            for first, payees in todo:
                began = time.perf_counter()
                signed = await key.sign(
                    to=stage.distributor,
                    data=calldata(first, payees),
                    gas=gas_limit,
                    nonce=next(nonces[key.sender]),
                    max_fee=max_fee,
                    priority_fee=tip,
                )
                await key.send_raw(signed.raw)
                # Over HTTP the node pushes nothing: polling is how the consumer waits too.
                while (receipt := await key.receipt(signed.tx_hash)) is None:  # noqa: ASYNC110
                    await asyncio.sleep(settings.receipt_poll_s)
                took.append(time.perf_counter() - began)
                if not receipt.succeeded:
                    raise RuntimeError(f"chain stage: {signed.tx_hash} reverted")
                gas_used.append(await _gas_used(rpc_url, signed.tx_hash))

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in keys for _ in range(cap)))
        seconds = time.perf_counter() - start
    finally:
        for key in keys:
            await key.close()
    window = len(keys) * cap
    return ChainRate(
        rate=Rate.of(
            f"{what}: distributeBatch of {settings.batch_max_size}, ≤ {window} unmined",
            len(recipients),
            seconds,
        ),
        window=window,
        batches=len(work),
        batch_size=settings.batch_max_size,
        gas_per_payment=round(sum(gas_used) / len(recipients)),
        mean_ms=int(1000 * sum(took) / len(took)),
    )


async def _prices(
    settings: Settings, key: Chain, distributor: str, first: tuple[int, list[str]]
) -> tuple[int, int, int]:
    """(gas limit, max fee, tip) for every batch, as the gatherer prices one: every batch
    is as large as the first and pays the same kind of holder."""
    gas = await key.estimate(distributor, calldata(*first))
    tip = settings.priority_fee_wei
    max_fee = min(2 * await key.base_fee() + tip, settings.max_fee_wei)
    return gas * (100 + GAS_MARGIN_PERCENT) // 100 + GAS_MARGIN_FIXED, max_fee, tip


async def _gas_used(rpc_url: str, tx_hash: str) -> int:
    """From the receipt as the node gives it (the consumer's ``Receipt`` keeps no gas)."""
    receipt = await sandbox.rpc(rpc_url, "eth_getTransactionReceipt", [tx_hash])
    assert isinstance(receipt, dict)
    return int(receipt["gasUsed"], 16)
