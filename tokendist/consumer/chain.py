"""The chain adapter: every web3 call goes through here, errors mapped to ours.

connection refused / timeout / 5xx         → ChainUnavailable (retry)
estimate reverts (custom error or message) → ChainRejected(reason)
"already known" / "nonce too low" / "replacement transaction underpriced" on send
                                           → a ``SendResult``: the node has (or had)
                                             a transaction with this nonce; the caller
                                             goes on to confirmation, never re-signs.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aiohttp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from pydantic import SecretStr
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    TimeExhausted,
    Web3RPCError,
)
from web3.types import RPCEndpoint

from tokendist.consumer import contracts
from tokendist.core.errors import ChainRejected, ChainUnavailable, KeyRejected

T = TypeVar("T")

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    TimeExhausted,
)


class SendResult(enum.Enum):
    ACCEPTED = "accepted"
    ALREADY_KNOWN = "already_known"  # the pool holds it already
    NONCE_TOO_LOW = "nonce_too_low"  # a transaction with this nonce was mined
    UNDERPRICED_REPLACEMENT = "underpriced_replacement"  # a sibling with this nonce is pooled


# Reverts that say the key may not distribute (OpenZeppelin AccessControl's error).
KEY_ERRORS = frozenset({"AccessControlUnauthorizedAccount"})

SEND_ANSWERS = (
    ("already known", SendResult.ALREADY_KNOWN),
    ("already imported", SendResult.ALREADY_KNOWN),
    ("nonce too low", SendResult.NONCE_TOO_LOW),
    ("replacement transaction underpriced", SendResult.UNDERPRICED_REPLACEMENT),
)


@dataclass(frozen=True, slots=True)
class Signed:
    tx_hash: str
    raw: bytes
    nonce: int
    gas: int
    max_fee_per_gas: int
    priority_fee: int


@dataclass(frozen=True, slots=True)
class Block:
    number: int
    base_fee: int


@dataclass(frozen=True, slots=True)
class Receipt:
    tx_hash: str
    block_number: int
    succeeded: bool
    logs: tuple[dict[str, Any], ...] = ()


async def guarded(op: Callable[[], Awaitable[T]]) -> T:
    try:
        return await op()
    except TRANSPORT_ERRORS as exc:
        raise ChainUnavailable(f"{type(exc).__name__}: {exc}") from exc
    except Web3RPCError as exc:
        if _is_overload(exc):
            raise ChainUnavailable(str(exc)) from exc
        raise


def _is_overload(exc: Web3RPCError) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("rate limit", "too many requests", "timeout", "unavailable"))


class Chain:
    """One RPC endpoint and one signing key (an operator of the Distributor); the key
    pool (``consumer.keypool``) holds one per key."""

    def __init__(self, rpc_url: str, operator_key: SecretStr, *, timeout_s: float = 10.0) -> None:
        self.w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))
        self._account: LocalAccount = Account.from_key(operator_key.get_secret_value())
        self._chain_id: int | None = None

    def __repr__(self) -> str:  # never let the key reach a log line
        return f"Chain(sender={self.sender})"

    @property
    def sender(self) -> ChecksumAddress:
        return self._account.address

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = await guarded(lambda: self.w3.eth.chain_id)
        return self._chain_id

    async def nonce(self, *, pending: bool) -> int:
        return await self.nonce_of(self.sender, pending=pending)

    async def nonce_of(self, address: str, *, pending: bool) -> int:
        """``address``'s transaction count as of the pending or the latest block."""
        block: Literal["pending", "latest"] = "pending" if pending else "latest"
        account = AsyncWeb3.to_checksum_address(address)
        return await guarded(lambda: self.w3.eth.get_transaction_count(account, block))

    async def gas_balance(self) -> int:
        """The operator's ETH, in wei: what pays for every distribution's gas."""
        return await guarded(lambda: self.w3.eth.get_balance(self.sender))

    async def latest(self) -> Block:
        block = await guarded(lambda: self.w3.eth.get_block("latest"))
        return Block(int(block["number"]), int(block.get("baseFeePerGas", 0)))

    async def base_fee(self) -> int:
        return (await self.latest()).base_fee

    async def block_number(self) -> int:
        return await guarded(lambda: self.w3.eth.block_number)

    async def estimate(self, to: str, data: HexStr) -> int:
        """Gas for the call, or ``ChainRejected`` when it would revert: a deterministic
        revert must be found before a nonce is spent on it."""
        tx: Any = {"from": self.sender, "to": AsyncWeb3.to_checksum_address(to), "data": data}
        try:
            return await guarded(lambda: self.w3.eth.estimate_gas(tx))
        except ContractCustomError as exc:
            name = self._decode_revert(exc)
            if name in KEY_ERRORS:
                raise KeyRejected(f"reverted: {name}") from exc
            raise ChainRejected(f"reverted: {name}") from exc
        except ContractLogicError as exc:
            raise ChainRejected(f"reverted: {exc.message or exc}") from exc
        except Web3RPCError as exc:
            if "insufficient funds" in str(exc).lower():
                raise KeyRejected("insufficient funds for gas") from exc
            raise ChainRejected(f"estimate refused: {exc}") from exc

    def _decode_revert(self, exc: ContractCustomError) -> str:
        data = str(exc.data or exc.message or "")
        selector = data[:10]
        # The token's own errors bubble up through the Distributor's call to it.
        known = contracts.error_selectors("Distributor") | contracts.error_selectors(
            "PropertyToken"
        )
        return known.get(selector) or data

    def sign(
        self, *, to: str, data: HexStr, gas: int, nonce: int, max_fee: int, priority_fee: int
    ) -> Signed:
        if self._chain_id is None:
            raise RuntimeError("chain_id() must be awaited before signing")
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self._chain_id,
            "nonce": nonce,
            "to": AsyncWeb3.to_checksum_address(to),
            "data": data,
            "value": 0,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": priority_fee,
        }
        signed = self._account.sign_transaction(tx)
        return Signed(
            tx_hash="0x" + bytes(signed.hash).hex(),
            raw=bytes(signed.raw_transaction),
            nonce=nonce,
            gas=gas,
            max_fee_per_gas=max_fee,
            priority_fee=priority_fee,
        )

    async def send_raw(self, raw: bytes) -> SendResult:
        try:
            await guarded(lambda: self.w3.eth.send_raw_transaction(HexBytes(raw)))
        except Web3RPCError as exc:
            text = str(exc).lower()
            for needle, result in SEND_ANSWERS:
                if needle in text:
                    return result
            raise ChainRejected(f"node refused transaction: {exc}") from exc
        return SendResult.ACCEPTED

    async def receipt(self, tx_hash: str) -> Receipt | None:
        return (await self.receipts([tx_hash]))[tx_hash]

    async def receipts(self, tx_hashes: list[str]) -> dict[str, Receipt | None]:
        """Each transaction's receipt (None: not mined), in one JSON-RPC batch request."""
        calls: list[tuple[RPCEndpoint, Any]] = [
            (RPCEndpoint("eth_getTransactionReceipt"), [h]) for h in tx_hashes
        ]
        answers = await guarded(lambda: self.w3.provider.make_batch_request(calls))
        if not isinstance(answers, list) or len(answers) != len(tx_hashes):
            raise ChainUnavailable(f"batch of {len(tx_hashes)} receipts answered {answers!r:.200}")
        found: dict[str, Receipt | None] = {}
        for tx_hash, answer in zip(tx_hashes, answers, strict=True):
            if "error" in answer:
                raise ChainUnavailable(f"receipt of {tx_hash}: {answer['error']}")
            raw = answer.get("result")
            found[tx_hash] = None if raw is None else _receipt(tx_hash, raw)
        return found

    async def distributed_logs(
        self, distributor: str, from_block: int = 0, to_block: int | None = None
    ) -> list[dict[str, Any]]:
        """The ``Distributed`` events the distributor emitted in these blocks."""
        return await self._logs(distributor, [contracts.DISTRIBUTED_TOPIC], from_block, to_block)

    async def payment_logs(self, distributor: str, payment_id: str) -> list[dict[str, Any]]:
        """The ``Distributed`` events that paid ``payment_id`` (0x-hex), ever."""
        return await self._logs(distributor, [contracts.DISTRIBUTED_TOPIC, payment_id], 0, None)

    async def _logs(
        self, address: str, topics: list[str], from_block: int, to_block: int | None
    ) -> list[dict[str, Any]]:
        params: Any = {
            "address": AsyncWeb3.to_checksum_address(address),
            "fromBlock": from_block,
            "toBlock": "latest" if to_block is None else to_block,
            "topics": topics,
        }
        return [dict(entry) for entry in await guarded(lambda: self.w3.eth.get_logs(params))]

    async def call(self, to: str, data: bytes) -> bytes:
        """``eth_call`` at the latest block: what a view function answers; a revert is
        ``ChainRejected``."""
        tx: Any = {"to": AsyncWeb3.to_checksum_address(to), "data": data}
        try:
            return bytes(await guarded(lambda: self.w3.eth.call(tx)))
        except ContractLogicError as exc:
            raise ChainRejected(f"eth_call to {to} reverted: {exc.message or exc}") from exc

    async def token_balance(self, token: str, holder: str) -> int:
        contract = self.w3.eth.contract(
            address=AsyncWeb3.to_checksum_address(token), abi=contracts.abi("PropertyToken")
        )
        balance: int = await guarded(
            lambda: contract.functions.balanceOf(AsyncWeb3.to_checksum_address(holder)).call()
        )
        return balance

    async def close(self) -> None:
        await self.w3.provider.disconnect()


def _receipt(tx_hash: str, raw: dict[str, Any]) -> Receipt:
    """A receipt as the JSON-RPC answer gives it (hex strings), logs kept as they are."""
    return Receipt(
        tx_hash,
        int(raw["blockNumber"], 16),
        int(raw["status"], 16) == 1,
        tuple(raw.get("logs") or ()),
    )
