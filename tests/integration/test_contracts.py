"""The Distributor v2 on anvil (the real OpenZeppelin-based contracts): gas per payment
from receipts, the per-index guard (an already-paid index is skipped, never paid twice),
who may distribute, a failing transfer rolling the whole batch back, and payouts read
back from the logs."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import ContractCustomError

from tests.integration import harness
from tokendist.consumer import contracts
from tokendist.core.errors import ChainRejected
from tokendist.core.settings import Settings
from tokendist.ops.deploy import Deployer, Deployment
from tokendist.ops.payouts import read_payouts

pytestmark = pytest.mark.integration

BATCH = 200
GAS_NEW_HOLDER = 30_000
GAS_EXISTING_HOLDER = 12_000
# Room enough for any batch here: a reverting batch is sent anyway and must be mined.
GAS_LIMIT = 15_000_000


class Sender:
    """A key sending ``distributeBatch`` transactions, one at a time."""

    def __init__(self, rpc_url: str, key: str) -> None:
        self.w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        self.account: LocalAccount = Account.from_key(key)

    async def estimate(self, to: str, data: str) -> int:
        tx: Any = {"from": self.account.address, "to": to, "data": data}
        return await self.w3.eth.estimate_gas(tx)

    async def send(self, to: str, data: str) -> dict[str, Any]:
        """Sign and send with a fixed gas limit (a reverting call is mined, not refused);
        the receipt, with its logs."""
        w3 = self.w3
        tx: Any = {
            "type": 2,
            "chainId": await w3.eth.chain_id,
            "nonce": await w3.eth.get_transaction_count(self.account.address, "pending"),
            "to": AsyncWeb3.to_checksum_address(to),
            "data": data,
            "value": 0,
            "gas": GAS_LIMIT,
            "maxFeePerGas": 2 * (await w3.eth.get_block("latest"))["baseFeePerGas"] + 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
        signed = self.account.sign_transaction(tx)
        tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
        return dict(await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60))

    async def close(self) -> None:
        await self.w3.provider.disconnect()


def new_wallets(n: int) -> list[str]:
    return [Account.create().address for _ in range(n)]


def batch(first: int, wallets: list[str], amount: int = 10**18) -> list[tuple[bytes, str, int]]:
    return [
        (contracts.payment_id(f"inv-{first + i}-{secrets.token_hex(4)}"), w, amount + i)
        for i, w in enumerate(wallets)
    ]


async def operator(settings: Settings) -> Sender:
    rpc_url, key = settings.require_chain()
    return Sender(rpc_url, key.get_secret_value())


async def funded_stranger(settings: Settings) -> Sender:
    rpc_url, _ = settings.require_chain()
    key = "0x" + secrets.token_hex(32)
    await harness.fund(rpc_url, Account.from_key(key).address)
    return Sender(rpc_url, key)


async def deployer_of(settings: Settings) -> Deployer:
    rpc_url, key = settings.require_deployer()
    return Deployer(rpc_url, key)


async def balance(sender: Sender, tk: Deployment, holder: str) -> int:
    token = sender.w3.eth.contract(
        address=AsyncWeb3.to_checksum_address(tk.token_address),
        abi=contracts.abi("PropertyToken"),
    )
    value: int = await token.functions.balanceOf(holder).call()
    return value


async def is_paid(sender: Sender, tk: Deployment, index: int) -> bool:
    distributor = sender.w3.eth.contract(
        address=AsyncWeb3.to_checksum_address(tk.distributor_address),
        abi=contracts.abi("Distributor"),
    )
    value: bool = await distributor.functions.isPaid(index).call()
    return value


def revert_name(exc: ContractCustomError) -> str:
    return contracts.error_selectors("Distributor").get(str(exc.data)[:10], str(exc.data))


async def test_gas_per_payment_batches_of_200(settings: Settings, tokenization: Deployment) -> None:
    sender = await operator(settings)
    try:
        holders = new_wallets(BATCH)
        first = batch(0, holders)
        to_new = await sender.send(
            tokenization.distributor_address, contracts.batch_calldata(0, first)
        )
        again = batch(BATCH, holders)
        to_existing = await sender.send(
            tokenization.distributor_address, contracts.batch_calldata(BATCH, again)
        )
        assert to_new["status"] == 1
        assert to_existing["status"] == 1
        per_new = to_new["gasUsed"] / BATCH
        per_existing = to_existing["gasUsed"] / BATCH
        print(  # noqa: T201 -- the figures the closing note reports
            f"\ngas per payment, batches of {BATCH}: new holder {per_new:.0f}, "
            f"existing holder {per_existing:.0f} "
            f"(tx {to_new['gasUsed']} / {to_existing['gasUsed']})"
        )
        outcomes = contracts.batch_outcomes(to_new["logs"]) + contracts.batch_outcomes(
            to_existing["logs"]
        )
        assert [o.index for o in outcomes] == list(range(2 * BATCH))
        assert {o.result for o in outcomes} == {contracts.Result.PAID}
        paid = await read_payouts(
            sender.w3,
            distributor=tokenization.distributor_address,
            token=tokenization.token_address,
        )
        assert [(p.payment_id, p.to, p.amount) for p in paid] == [
            (pid, to.lower(), amount) for pid, to, amount in first + again
        ]
        assert {p.tx_hash for p in paid[:BATCH]} == {"0x" + bytes(to_new["transactionHash"]).hex()}
        assert await balance(sender, tokenization, holders[7]) == 2 * 10**18 + 14
        assert per_new <= GAS_NEW_HOLDER
        assert per_existing <= GAS_EXISTING_HOLDER
    finally:
        await sender.close()


async def test_an_already_paid_index_is_skipped_and_the_others_are_paid(
    settings: Settings, tokenization: Deployment
) -> None:
    sender = await operator(settings)
    try:
        wallets = new_wallets(5)
        earlier = batch(0, wallets[:3])
        assert (
            await sender.send(
                tokenization.distributor_address, contracts.batch_calldata(0, earlier)
            )
        )["status"] == 1
        # Indices 2..4: index 2 is paid already (say, a replaced batch's twin was mined).
        later = [earlier[2], *batch(3, wallets[3:])]
        receipt = await sender.send(
            tokenization.distributor_address, contracts.batch_calldata(2, later)
        )
        assert receipt["status"] == 1
        assert contracts.batch_outcomes(receipt["logs"]) == [
            contracts.Outcome(earlier[2][0], 2, contracts.Result.ALREADY_PAID),
            contracts.Outcome(later[1][0], 3, contracts.Result.PAID),
            contracts.Outcome(later[2][0], 4, contracts.Result.PAID),
        ]
        assert [await balance(sender, tokenization, w) for w in wallets] == [
            amount for _, _, amount in earlier + later[1:]
        ]
        paid = await read_payouts(
            sender.w3,
            distributor=tokenization.distributor_address,
            token=tokenization.token_address,
        )
        assert [p.index for p in paid] == [0, 1, 2, 3, 4]
        twice = await read_payouts(
            sender.w3,
            distributor=tokenization.distributor_address,
            token=tokenization.token_address,
            payment_id=earlier[2][0],
        )
        assert [(p.index, p.to, p.amount) for p in twice] == [
            (2, wallets[2].lower(), earlier[2][2])
        ]
        # The same batch replayed in full: a no-op, never a stuck batch.
        replay = await sender.send(
            tokenization.distributor_address, contracts.batch_calldata(2, later)
        )
        assert replay["status"] == 1
        assert {o.result for o in contracts.batch_outcomes(replay["logs"])} == {
            contracts.Result.ALREADY_PAID
        }
        assert await balance(sender, tokenization, wallets[4]) == later[2][2]
    finally:
        await sender.close()


async def test_a_non_operator_is_refused(settings: Settings, tokenization: Deployment) -> None:
    stranger = await funded_stranger(settings)
    rpc_url, deployer_key = settings.require_deployer()
    admin = Sender(rpc_url, deployer_key.get_secret_value())  # the admin is not an operator
    try:
        data = contracts.batch_calldata(0, batch(0, new_wallets(1)))
        for sender in (stranger, admin):
            with pytest.raises(ContractCustomError) as refused:
                await sender.estimate(tokenization.distributor_address, data)
            assert revert_name(refused.value) == "AccessControlUnauthorizedAccount"
        assert (await stranger.send(tokenization.distributor_address, data))["status"] == 0
        assert not await is_paid(stranger, tokenization, 0)
        # Nor may it make itself one: only the admin grants.
        usurper = Deployer(rpc_url, SecretStr(stranger.account.key.hex()))
        try:
            with pytest.raises(ChainRejected, match="AccessControlUnauthorizedAccount"):
                await usurper.grant_operator(
                    tokenization.distributor_address, usurper.account.address
                )
        finally:
            await usurper.close()
    finally:
        await stranger.close()
        await admin.close()


async def test_a_revoked_operator_is_refused_and_rotation_keeps_one(
    settings: Settings, tokenization: Deployment
) -> None:
    second = await funded_stranger(settings)
    deployer = await deployer_of(settings)
    dist = tokenization.distributor_address
    try:
        await deployer.grant_operator(dist, second.account.address)
        assert second.account.address in await deployer.operators(dist)
        assert (await second.send(dist, contracts.batch_calldata(0, batch(0, new_wallets(2)))))[
            "status"
        ] == 1
        await deployer.revoke_operator(dist, second.account.address)
        data = contracts.batch_calldata(2, batch(2, new_wallets(1)))
        with pytest.raises(ContractCustomError) as refused:
            await second.estimate(dist, data)
        assert revert_name(refused.value) == "AccessControlUnauthorizedAccount"
        assert (await second.send(dist, data))["status"] == 0
        assert not await is_paid(second, tokenization, 2)
        # rotate-operator: the new key is granted, every other one revoked.
        await deployer.set_operator(dist, second.account.address)
        assert await deployer.operators(dist) == [second.account.address]
    finally:
        await second.close()
        await deployer.close()


async def test_a_failing_transfer_reverts_the_whole_batch(settings: Settings) -> None:
    sender = await operator(settings)
    deployer = await deployer_of(settings)
    try:
        token, distributor = await deployer.deploy(
            operator=sender.account.address,
            name="Short",
            symbol="SHT",
            decimals=18,
            supply=10**6,
            fund=1_000,
        )
        short = Deployment("t", "p", 0, token, distributor, 18, 10**6)
        wallets = new_wallets(3)
        # The last payment asks for more than the Distributor still holds.
        too_much = (contracts.payment_id("too-much"), wallets[2], 900)
        payments = [*batch(0, wallets[:2], amount=100), too_much]
        receipt = await sender.send(distributor, contracts.batch_calldata(0, payments))
        assert receipt["status"] == 0
        assert [await is_paid(sender, short, i) for i in range(3)] == [False] * 3
        assert [await balance(sender, short, w) for w in wallets] == [0, 0, 0]
        assert await balance(sender, short, distributor) == 1_000
        # The same batch, within what it holds, is paid.
        payments[2] = (payments[2][0], wallets[2], 799)
        receipt = await sender.send(distributor, contracts.batch_calldata(0, payments))
        assert receipt["status"] == 1
        assert [await balance(sender, short, w) for w in wallets] == [100, 101, 799]
    finally:
        await sender.close()
        await deployer.close()


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ((0, [b"\1" * 32], [1]), "ZeroRecipient"),
        ((0, [b"\1" * 32], [7 << 96]), "ZeroAmount"),
        ((0, [b"\1" * 32], []), "LengthMismatch"),
        ((0, [], []), "EmptyBatch"),
        ((2**256 - 1, [b"\1" * 32] * 2, [7 << 96 | 1] * 2), "IndexOverflow"),
    ],
)
async def test_bad_input_is_refused_with_its_reason(
    settings: Settings,
    tokenization: Deployment,
    case: tuple[int, list[bytes], list[int]],
    error: str,
) -> None:
    """What ``batch_calldata`` refuses, the contract refuses too, by name."""
    sender = await operator(settings)
    selector, types = contracts.function("Distributor", "distributeBatch")
    data = "0x" + (selector + abi_encode(types, list(case))).hex()
    try:
        with pytest.raises(ContractCustomError) as refused:
            await sender.estimate(tokenization.distributor_address, data)
        assert revert_name(refused.value) == error
    finally:
        await sender.close()


async def test_operators_send_batches_side_by_side(
    settings: Settings, tokenization: Deployment
) -> None:
    """Two operator keys, disjoint index ranges, in flight together: both paid."""
    first = await operator(settings)
    second = await funded_stranger(settings)
    deployer = await deployer_of(settings)
    try:
        await deployer.grant_operator(tokenization.distributor_address, second.account.address)
        a, b = batch(0, new_wallets(3)), batch(3, new_wallets(3))
        receipts = await asyncio.gather(
            first.send(tokenization.distributor_address, contracts.batch_calldata(0, a)),
            second.send(tokenization.distributor_address, contracts.batch_calldata(3, b)),
        )
        assert [r["status"] for r in receipts] == [1, 1]
        assert [await is_paid(first, tokenization, i) for i in range(6)] == [True] * 6
    finally:
        await first.close()
        await second.close()
        await deployer.close()
