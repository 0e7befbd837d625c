"""The chain adapter: every web3 call goes through here, errors mapped to ours.

Every request goes through ``consumer.endpoints`` (the configured RPC endpoints as one
provider): reads to one endpoint that answers and keeps up, broadcasts to all that answer.

429 / 5xx / timeout / connection refused   → the endpoint rests, the next one is asked;
                                             none left: ChainUnavailable (retry)
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

from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import BlockNotFound, ContractCustomError, ContractLogicError, Web3RPCError
from web3.types import RPCEndpoint

from tokendist.consumer import contracts
from tokendist.consumer.endpoints import TRANSPORT_ERRORS, Endpoints, is_overload
from tokendist.core.errors import ChainRejected, ChainUnavailable, KeyRejected
from tokendist.core.finality import FinalityRule, Tag, is_final
from tokendist.core.settings import RpcSettings
from tokendist.custody import Signer

T = TypeVar("T")


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
    hash: str = ""  # a reorganisation may replace the head with another of its number


@dataclass(frozen=True, slots=True)
class Receipt:
    tx_hash: str
    block_number: int
    succeeded: bool
    logs: tuple[dict[str, Any], ...] = ()
    block_hash: str = ""  # of the block it was mined in: no longer canonical after a reorg


async def guarded(op: Callable[[], Awaitable[T]]) -> T:
    """``op`` with transport errors mapped: for one-shot tools talking to one node."""
    try:
        return await op()
    except TRANSPORT_ERRORS as exc:
        raise ChainUnavailable(f"{type(exc).__name__}: {exc}") from exc
    except Web3RPCError as exc:
        if is_overload(exc):
            raise ChainUnavailable(str(exc)) from exc
        raise


class Chain:
    """The RPC endpoints and one signing key (an operator of the Distributor, in whatever
    custody: ``tokendist.custody``); the key pool (``consumer.keypool``) holds one per
    key, all sharing one ``Endpoints``. Given a URL, it has that one endpoint of its own
    (closed with it)."""

    def __init__(self, rpc: str | Endpoints, signer: Signer) -> None:
        self._owns_rpc = isinstance(rpc, str)
        self._rpc = Endpoints([rpc], RpcSettings()) if isinstance(rpc, str) else rpc
        self.signer = signer
        self._chain_id: int | None = None

    @property
    def w3(self) -> AsyncWeb3[AsyncHTTPProvider]:
        """The first endpoint, for one-shot tools that read through web3 themselves."""
        return self._rpc.w3

    @property
    def rpc(self) -> Endpoints:
        """The endpoints this key reads and sends through."""
        return self._rpc

    def __repr__(self) -> str:
        return f"Chain(sender={self.sender}, custody={self.signer.custody})"

    @property
    def sender(self) -> ChecksumAddress:
        return self.signer.address

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = await self._rpc.read(lambda w3: w3.eth.chain_id)
        return self._chain_id

    async def nonce(self, *, pending: bool) -> int:
        return await self.nonce_of(self.sender, pending=pending)

    async def nonce_of(self, address: str, *, pending: bool) -> int:
        """``address``'s transaction count as of the pending or the latest block."""
        block: Literal["pending", "latest"] = "pending" if pending else "latest"
        account = AsyncWeb3.to_checksum_address(address)
        return await self._rpc.read(lambda w3: w3.eth.get_transaction_count(account, block))

    async def gas_balance(self) -> int:
        """The operator's ETH, in wei: what pays for every distribution's gas."""
        return await self._rpc.read(lambda w3: w3.eth.get_balance(self.sender))

    async def latest(self) -> Block:
        block = await self._rpc.read(lambda w3: w3.eth.get_block("latest"))
        return Block(
            int(block["number"]), int(block.get("baseFeePerGas", 0)), _hex(block.get("hash"))
        )

    async def tagged_block(self, tag: Tag) -> int | None:
        """The number of the node's ``finalized`` or ``safe`` block; None while it has
        none (a young chain)."""
        try:
            block = await self._rpc.read(lambda w3: w3.eth.get_block(tag.value))
        except BlockNotFound:
            return None
        return int(block["number"])

    async def final(self, rule: FinalityRule, block: int) -> bool:
        """Whether a transaction mined in ``block`` is final by ``rule`` now (for the
        operator tools, which read the node once rather than follow its head)."""
        tagged = await self.tagged_block(rule.tag) if rule.tag is not None else None
        return is_final(rule, block, await self.block_number(), tagged)

    async def block_hash(self, number: int) -> str | None:
        """The hash of the canonical block ``number``; None above the head."""
        try:
            block = await self._rpc.read(lambda w3: w3.eth.get_block(number))
        except BlockNotFound:
            return None
        return _hex(block.get("hash"))

    async def base_fee(self) -> int:
        return (await self.latest()).base_fee

    async def block_number(self) -> int:
        return await self._rpc.read(lambda w3: w3.eth.block_number)

    async def estimate(self, to: str, data: HexStr) -> int:
        """Gas for the call, or ``ChainRejected`` when it would revert: a deterministic
        revert must be found before a nonce is spent on it."""
        tx: Any = {"from": self.sender, "to": AsyncWeb3.to_checksum_address(to), "data": data}
        try:
            return await self._rpc.read(lambda w3: w3.eth.estimate_gas(tx))
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

    async def sign(
        self, *, to: str, data: HexStr, gas: int, nonce: int, max_fee: int, priority_fee: int
    ) -> Signed:
        """The transaction signed by this key's custody; ``SignerUnavailable`` or
        ``KeyRejected`` from a remote one (``custody.Signer``)."""
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
        signed = await self.signer.sign(tx)
        return Signed(
            tx_hash=signed.tx_hash,
            raw=signed.raw,
            nonce=nonce,
            gas=gas,
            max_fee_per_gas=max_fee,
            priority_fee=priority_fee,
        )

    async def send_raw(self, raw: bytes) -> SendResult:
        """Broadcast to every endpoint that answers; the first (in the configured order)
        that has the transaction decides the result. ``ChainRejected`` only when every
        endpoint that answered refused it."""
        answers = await self._rpc.broadcast(lambda w3: w3.eth.send_raw_transaction(HexBytes(raw)))
        refusals: list[Web3RPCError] = []
        for answer in answers:
            if not isinstance(answer, Exception):
                return SendResult.ACCEPTED
            if not isinstance(answer, Web3RPCError):
                raise answer
            text = str(answer).lower()
            known = next((result for needle, result in SEND_ANSWERS if needle in text), None)
            if known is not None:
                return known
            refusals.append(answer)
        raise ChainRejected(f"node refused transaction: {refusals[0]}") from refusals[0]

    async def receipt(self, tx_hash: str) -> Receipt | None:
        return (await self.receipts([tx_hash]))[tx_hash]

    async def receipts(self, tx_hashes: list[str]) -> dict[str, Receipt | None]:
        """Each transaction's receipt (None: not mined), in one JSON-RPC batch request."""
        return await self._rpc.read(lambda w3: _receipts(w3, tx_hashes))

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
        return [dict(entry) for entry in await self._rpc.read(lambda w3: w3.eth.get_logs(params))]

    async def call(self, to: str, data: bytes) -> bytes:
        """``eth_call`` at the latest block: what a view function answers; a revert is
        ``ChainRejected``."""
        tx: Any = {"to": AsyncWeb3.to_checksum_address(to), "data": data}
        try:
            return bytes(await guarded(lambda: self.w3.eth.call(tx)))
        except ContractLogicError as exc:
            raise ChainRejected(f"eth_call to {to} reverted: {exc.message or exc}") from exc

    async def token_balance(self, token: str, holder: str) -> int:
        async def balance_of(w3: AsyncWeb3[AsyncHTTPProvider]) -> int:
            contract = w3.eth.contract(
                address=AsyncWeb3.to_checksum_address(token), abi=contracts.abi("PropertyToken")
            )
            balance: int = await contract.functions.balanceOf(
                AsyncWeb3.to_checksum_address(holder)
            ).call()
            return balance

        return await self._rpc.read(balance_of)

    async def close(self) -> None:
        if self._owns_rpc:
            await self._rpc.close()


async def _receipts(
    w3: AsyncWeb3[AsyncHTTPProvider], tx_hashes: list[str]
) -> dict[str, Receipt | None]:
    calls: list[tuple[RPCEndpoint, Any]] = [
        (RPCEndpoint("eth_getTransactionReceipt"), [h]) for h in tx_hashes
    ]
    answers = await w3.provider.make_batch_request(calls)
    # ChainUnavailable: this endpoint answered badly, so the next one is asked.
    if not isinstance(answers, list) or len(answers) != len(tx_hashes):
        raise ChainUnavailable(f"batch of {len(tx_hashes)} receipts answered {answers!r:.200}")
    found: dict[str, Receipt | None] = {}
    for tx_hash, answer in zip(tx_hashes, answers, strict=True):
        if "error" in answer:
            raise ChainUnavailable(f"receipt of {tx_hash}: {answer['error']}")
        raw = answer.get("result")
        found[tx_hash] = None if raw is None else _receipt(tx_hash, raw)
    return found


def _receipt(tx_hash: str, raw: dict[str, Any]) -> Receipt:
    """A receipt as the JSON-RPC answer gives it (hex strings), logs kept as they are."""
    return Receipt(
        tx_hash,
        int(raw["blockNumber"], 16),
        int(raw["status"], 16) == 1,
        tuple(raw.get("logs") or ()),
        str(raw["blockHash"]).lower(),
    )


def _hex(value: Any) -> str:
    """A hash as web3 gives it (bytes or hex text), as 0x-hex lowercase."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value or "").lower()
