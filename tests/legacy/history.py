"""Writes an ``OldSystem``'s history for real: the old tables in a PostgreSQL database of
their own, and every transfer as an ERC-20 ``transfer`` signed by an old distributor
wallet (an EOA, as the old system had) on anvil."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import AsyncHTTPProvider, AsyncWeb3

from tests.integration import harness
from tests.legacy.oldsystem import OldSystem
from tokendist.consumer import contracts
from tokendist.core import db

DECIMALS = 18
UNIT = 10**DECIMALS
DEFECTS = (
    "1_holdings_replaced",
    "2_concurrent_double_transfer",
    "3_delta_paid_less",
    "3_stale_balance_read",
    "4_webhook_retried",
    "5_reconcile_raced",
    "6_status_update_failed",
    "7_reaggregated_after_failed_update",
)


def fresh_wallets(n: int) -> list[str]:
    return [str(Account.create().address) for _ in range(n)]


# The old system's tables, as the investigation names them (Supabase: uuid keys, naira
# amounts, whole-token balances) plus the profiles that held wallets and KYC.
SCHEMA = """
CREATE TABLE profiles (id uuid PRIMARY KEY, wallet_address text, kyc_status text);
CREATE TABLE investments (
    id uuid PRIMARY KEY, user_id uuid NOT NULL, tokenization_id text NOT NULL,
    tokens_requested numeric NOT NULL, amount_ngn numeric(18, 2) NOT NULL,
    payment_status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE token_holdings (
    user_id uuid NOT NULL, tokenization_id text NOT NULL, property_id text,
    balance numeric NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, tokenization_id));
CREATE TABLE token_distribution_events (
    id bigserial PRIMARY KEY, tokenization_id text NOT NULL, user_id uuid NOT NULL,
    investment_id uuid NOT NULL, tokens_requested numeric NOT NULL,
    tokens_transferred numeric NOT NULL, wallet_address text, status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
"""


async def create_database(admin_dsn: str) -> str:
    """A fresh database for one test's old system; the caller drops it (``drop``)."""
    return await db.create_database(admin_dsn, f"legacy_{uuid.uuid4().hex[:16]}")


async def drop(admin_dsn: str, dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1]
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def write_tables(dsn: str, old: OldSystem) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        await conn.executemany(
            "INSERT INTO profiles VALUES ($1, $2, $3)",
            [(uuid.UUID(u.id), u.wallet, u.kyc_status) for u in old.users],
        )
        await conn.executemany(
            "INSERT INTO investments (id, user_id, tokenization_id, tokens_requested, amount_ngn,"
            " payment_status) VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (
                    uuid.UUID(i.id),
                    uuid.UUID(i.user_id),
                    i.tokenization_id,
                    i.tokens,
                    i.amount_ngn,
                    i.status,
                )
                for i in old.investments.values()
            ],
        )
        await conn.executemany(
            "INSERT INTO token_holdings (user_id, tokenization_id, balance) VALUES ($1, $2, $3)",
            [(uuid.UUID(u), tk, balance) for (u, tk), balance in old.holdings.items()],
        )
        await conn.executemany(
            "INSERT INTO token_distribution_events (tokenization_id, user_id, investment_id,"
            " tokens_requested, tokens_transferred, wallet_address, status)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                (
                    e.tokenization_id,
                    uuid.UUID(e.user_id),
                    uuid.UUID(e.investment_id),
                    e.tokens_requested,
                    e.tokens_transferred,
                    e.wallet,
                    e.status,
                )
                for e in old.events
            ],
        )
    finally:
        await conn.close()


@dataclass
class OldWallets:
    accounts: list[LocalAccount]

    @classmethod
    async def funded(cls, rpc_url: str, n: int = 2) -> OldWallets:
        accounts = [Account.create() for _ in range(n)]
        await harness.fund(rpc_url, *(a.address for a in accounts))
        return cls(accounts)

    @property
    def addresses(self) -> list[str]:
        return [str(a.address) for a in self.accounts]


async def deploy_token(rpc_url: str, treasury: LocalAccount, supply: int) -> str:
    """A plain ERC-20 property token, its supply minted to ``treasury``: the one place that
    knows the token's constructor."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    try:
        factory = w3.eth.contract(
            abi=contracts.abi("PropertyToken"),
            bytecode=contracts.artifact("PropertyToken")["bytecode"],
        )
        tx = await factory.constructor(
            "Old Property", "OLD", DECIMALS, supply, treasury.address
        ).build_transaction(
            {
                "from": treasury.address,
                "nonce": await w3.eth.get_transaction_count(treasury.address),
            }
        )
        receipt = await _send(w3, treasury, [dict(tx)])
        return str(receipt["contractAddress"])
    finally:
        await w3.provider.disconnect()


async def fund_wallets(
    rpc_url: str, treasury: LocalAccount, tokens: Iterable[str], wallets: OldWallets, amount: int
) -> None:
    """The treasury moves ``amount`` of each token to each old distributor wallet."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    try:
        txs = [
            {"to": token, "data": _transfer_data(address, amount)}
            for token in tokens
            for address in wallets.addresses
        ]
        await _send(w3, treasury, txs)
    finally:
        await w3.provider.disconnect()


def _transfer_data(to: str, amount: int) -> str:
    selector = keccak(text="transfer(address,uint256)")[:4]
    return (
        "0x"
        + (
            selector
            + abi_encode(["address", "uint256"], [AsyncWeb3.to_checksum_address(to), amount])
        ).hex()
    )


async def send_transfers(
    rpc_url: str, wallets: OldWallets, old: OldSystem, tokens: dict[str, str]
) -> None:
    """Every transfer of ``old``, in order, signed by its old wallet; waits until mined."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    try:
        by_sender: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(wallets.accounts))}
        for t in old.transfers:
            by_sender[t.sender].append(
                {
                    "to": tokens[t.tokenization_id],
                    "data": _transfer_data(t.recipient, t.tokens * UNIT),
                }
            )
        for sender, txs in by_sender.items():
            if txs:
                await _send(w3, wallets.accounts[sender], txs)
    finally:
        await w3.provider.disconnect()


async def _send(w3: AsyncWeb3[Any], account: LocalAccount, txs: list[dict[str, Any]]) -> Any:
    """Sign ``txs`` with consecutive nonces, send them all, wait for the last receipt."""
    nonce = int(await w3.eth.get_transaction_count(account.address, "pending"))
    base = (await w3.eth.get_block("latest"))["baseFeePerGas"]
    chain_id = await w3.eth.chain_id
    last = HexBytes(b"")
    for tx in txs:
        tx.update(
            nonce=nonce,
            gas=tx.get("gas", 80_000),
            maxFeePerGas=4 * base + 10**9,
            maxPriorityFeePerGas=10**9,
            chainId=chain_id,
        )
        tx.pop("from", None)
        if not tx.get("to"):  # web3 leaves an empty ``to`` in a deployment
            tx.pop("to", None)
        tx.pop("gasPrice", None)
        last = await w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        nonce += 1
    receipt = await w3.eth.wait_for_transaction_receipt(last, timeout=120)
    assert receipt["status"] == 1, receipt
    return receipt
