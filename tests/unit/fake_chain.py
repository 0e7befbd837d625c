"""An in-memory chain for unit tests: one simulated node (``FakeNode``) holding
Distributor v2 contracts, and ``FakeChain``, one connection to it with one operator key
(``consumer.ports.OperatorChain``), so that a pool of keys is a list of ``FakeChain`` on
one node.

The node only ever sees bytes: a signed transaction is decoded from its raw form, a
``distributeBatch`` from its calldata (``contracts.decode_batch_calldata``), and a mined
batch yields the logs the real contract emits (``Distributed``/``AlreadyPaid`` with the
payment id indexed and the index in data, each payout followed by the token's
``Transfer``) in the JSON-RPC form, so ``contracts.batch_outcomes``, ``paid`` and
``payouts`` decode them as they decode a real receipt.

Time passes only when someone asks: each ``latest`` is a new block (mining the pool
when ``auto_mine``; none while ``halted``), and a broadcast transaction is mined at once
when ``auto_mine``.
Every signature and broadcast is counted on the node, whichever key made it.

``reorg`` and ``rollback`` are anvil's ``anvil_reorg`` and ``anvil_rollback``: the last
blocks' transactions are undone (bits, balances, logs, nonces) and not put back in the
pool; the blocks that replace them have other hashes. ``tag_lag`` gives the node a
``finalized``/``safe`` block that many blocks behind the head.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from eth_typing import HexStr

from tokendist.consumer import contracts
from tokendist.consumer.chain import KEY_ERRORS, Block, Receipt, SendResult, Signed
from tokendist.core.errors import ChainRejected, ChainUnavailable, KeyRejected
from tokendist.core.finality import Tag

CHAIN_ID = 31_337
# Anvil's first well-known accounts: addresses only.
SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
SENDER_2 = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
SENDER_3 = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
STRANGER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"  # not an operator
DISTRIBUTOR = "0x" + "22" * 20
TOKEN = "0x" + "11" * 20
GAS_PER_BATCH = 30_000
GAS_PER_PAYMENT = 25_000
# geth's rule: a replacement must raise both fees by at least this percent.
REPLACEMENT_BUMP_PERCENT = 10


class Revert(Exception):
    """``distributeBatch`` reverted with this custom error's name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True, slots=True)
class Effect:
    """One payment of a batch as the contract handled it."""

    payment_id: bytes
    index: int
    to: str
    amount: int
    paid: bool  # False: ``AlreadyPaid``, skipped


class FakeDistributor:
    """Distributor v2: an operator role, a bit per index, and the token balance it holds."""

    def __init__(self, address: str, tokens: int, operators: list[str]) -> None:
        self.address = address.lower()
        self.token = TOKEN
        self.tokens = tokens  # the token balance of the contract
        self.operators = {o.lower() for o in operators}
        self.bits: set[int] = set()
        self.balances: dict[str, int] = {}  # token balances of the recipients it paid
        self.refused: dict[str, str] = {}  # recipient -> the token's revert for it

    def run(self, sender: str, data: str, *, commit: bool) -> list[Effect]:
        """Execute ``distributeBatch``; ``commit=False`` is an estimate (nothing kept)."""
        if sender.lower() not in self.operators:
            raise Revert("AccessControlUnauthorizedAccount")
        try:
            first, payments = contracts.decode_batch_calldata(data)
        except ValueError as exc:
            raise Revert(f"malformed: {exc}") from exc
        bits, tokens, effects = set(self.bits), self.tokens, []
        for offset, (pid, to, amount) in enumerate(payments):
            index = first + offset
            if index in bits:
                effects.append(Effect(pid, index, to, amount, paid=False))
                continue
            if to in self.refused:
                raise Revert(self.refused[to])
            if amount > tokens:
                raise Revert("ERC20InsufficientBalance")
            bits.add(index)
            tokens -= amount
            effects.append(Effect(pid, index, to, amount, paid=True))
        if commit:
            self.bits, self.tokens = bits, tokens
            for e in effects:
                if e.paid:
                    self.balances[e.to] = self.balances.get(e.to, 0) + e.amount
        return effects

    def paid_to(self, recipient: str) -> int:
        return self.balances.get(recipient.lower(), 0)


@dataclass(frozen=True, slots=True)
class Tx:
    """A signed transaction, as the node decodes it from its raw bytes."""

    tx_hash: str
    sender: str
    to: str
    data: str
    nonce: int
    gas: int
    max_fee: int
    tip: int

    @classmethod
    def decode(cls, raw: bytes) -> Tx:
        fields = json.loads(raw)
        return cls("0x" + hashlib.sha256(raw).hexdigest(), **fields)


@dataclass(frozen=True, slots=True)
class Included:
    """A mined transaction and what it did: what a reorganisation undoes."""

    block: int
    tx: Tx
    distributor: FakeDistributor | None
    effects: tuple[Effect, ...]


@dataclass
class FakeNode:
    chain_id: int = CHAIN_ID
    base_fee: int = 10**9
    block: int = 1
    auto_mine: bool = True
    down: bool = False
    send_refusal: str | None = None  # any broadcast is refused with this reason
    distributors: dict[str, FakeDistributor] = field(default_factory=dict)
    mined_nonces: dict[str, int] = field(default_factory=dict)  # by lowercase sender
    gas_wei: dict[str, int] = field(default_factory=dict)  # by lowercase sender
    pool: dict[str, Tx] = field(default_factory=dict)
    mined: dict[str, Receipt] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    signatures: list[Signed] = field(default_factory=list)
    broadcasts: list[str] = field(default_factory=list)  # every hash sent, in order
    tag_lag: dict[Tag, int] = field(default_factory=dict)  # no tag: the node has none
    included: list[Included] = field(default_factory=list)
    forks: int = 0  # reorganisations so far: part of every later block's hash
    halted: bool = False  # asking for the head makes no new block (a send still mines)
    hashes: dict[int, str] = field(default_factory=dict)

    # --- what tests do ------------------------------------------------------------------

    def deploy(
        self, address: str = DISTRIBUTOR, *, tokens: int = 10**30, operators: list[str]
    ) -> FakeDistributor:
        distributor = self.distributors[address.lower()] = FakeDistributor(
            address, tokens, operators
        )
        return distributor

    def new_block(self) -> None:
        self.block += 1
        self.hashes[self.block] = f"0x{self.forks:04x}{self.block:060x}"

    def hash_of(self, number: int) -> str | None:
        if number > self.block:
            return None
        return self.hashes.get(number, f"0x{0:04x}{number:060x}")

    def tagged(self, tag: Tag) -> int | None:
        lag = self.tag_lag.get(tag)
        return None if lag is None or self.block < lag else self.block - lag

    def reorg(self, depth: int, *, reinclude: bool = False) -> list[Tx]:
        """``anvil_reorg``: the last ``depth`` blocks replaced by as many new ones, the
        height kept; their transactions dropped, or (``reinclude``) mined again in the
        first new block. Returns the transactions taken out."""
        dropped = self._undo(depth)
        if reinclude:
            self.pool |= {tx.tx_hash: tx for tx in dropped}
            self.mine()
            depth -= 1
        for _ in range(depth):
            self.new_block()
        return dropped

    def rollback(self, depth: int) -> list[Tx]:
        """``anvil_rollback``: the last ``depth`` blocks gone, their transactions too."""
        return self._undo(depth)

    def mine(self) -> None:
        """A new block: every sender's pooled transactions next in nonce order whose fee
        covers the base fee."""
        self.new_block()
        for sender in sorted({tx.sender for tx in self.pool.values()}):
            while True:
                nonce = self.mined_nonces.get(sender, 0)
                tx = next(
                    (t for t in self.pool.values() if (t.sender, t.nonce) == (sender, nonce)),
                    None,
                )
                if tx is None or tx.max_fee < self.base_fee:
                    break
                self._include(tx)

    def take_nonce(self, sender: str) -> str:
        """A transaction we did not sign is mined with ``sender``'s next nonce (the key
        used elsewhere): ours of that nonce can never be mined. Returns its hash."""
        self.new_block()
        nonce = self.mined_nonces.get(sender.lower(), 0)
        foreign = Tx(
            "0x" + hashlib.sha256(f"foreign {nonce}".encode()).hexdigest(),
            sender.lower(),
            STRANGER.lower(),
            "0x",
            nonce,
            21_000,
            self.base_fee,
            0,
        )
        self._include(foreign)
        return foreign.tx_hash

    def drop(self, tx_hash: str) -> None:
        """The node forgets a pooled transaction (a restart, an eviction)."""
        del self.pool[tx_hash]

    def pending_nonce(self, sender: str) -> int:
        nonce = self.mined_nonces.get(sender.lower(), 0)
        pooled = {t.nonce for t in self.pool.values() if t.sender == sender.lower()}
        while nonce in pooled:
            nonce += 1
        return nonce

    def receipt_of(self, tx_hash: str) -> Receipt:
        return self.mined[tx_hash]

    # --- the node's inner workings ------------------------------------------------------

    def _undo(self, depth: int) -> list[Tx]:
        cut = self.block - depth
        gone = [i for i in self.included if i.block > cut]
        self.included = [i for i in self.included if i.block <= cut]
        for i in reversed(gone):
            del self.mined[i.tx.tx_hash]
            self.mined_nonces[i.tx.sender] = min(self.mined_nonces.get(i.tx.sender, 0), i.tx.nonce)
            self.logs = [e for e in self.logs if e["transactionHash"] != i.tx.tx_hash]
            for e in i.effects:
                if e.paid and i.distributor is not None:
                    i.distributor.bits.discard(e.index)
                    i.distributor.tokens += e.amount
                    i.distributor.balances[e.to] -= e.amount
        for number in range(cut + 1, self.block + 1):
            self.hashes.pop(number, None)
        self.block = cut
        self.forks += 1
        return [i.tx for i in gone]

    def _include(self, tx: Tx) -> None:
        self.mined_nonces[tx.sender] = tx.nonce + 1
        self.pool = {
            h: t
            for h, t in self.pool.items()
            if not (t.sender == tx.sender and t.nonce <= tx.nonce)
        }
        distributor = self.distributors.get(tx.to)
        logs: list[dict[str, Any]] = []
        succeeded = True
        effects: list[Effect] = []
        if distributor is not None:
            try:
                effects = distributor.run(tx.sender, tx.data, commit=True)
                logs = self._logs(tx, distributor, effects)
            except Revert:
                succeeded = False
        self.logs += logs
        self.included.append(Included(self.block, tx, distributor, tuple(effects)))
        self.mined[tx.tx_hash] = Receipt(
            tx.tx_hash, self.block, succeeded, tuple(logs), self.hash_of(self.block) or ""
        )

    def _logs(
        self, tx: Tx, distributor: FakeDistributor, effects: list[Effect]
    ) -> list[dict[str, Any]]:
        logs: list[dict[str, Any]] = []

        def emit(address: str, topics: list[str], data: bytes) -> None:
            logs.append(
                {
                    "address": address,
                    "topics": topics,
                    "data": "0x" + data.hex(),
                    "blockNumber": hex(self.block),
                    "transactionHash": tx.tx_hash,
                    "logIndex": hex(len(self.logs) + len(logs)),
                }
            )

        for e in effects:
            pid, index = "0x" + e.payment_id.hex(), e.index.to_bytes(32, "big")
            if not e.paid:
                emit(distributor.address, [contracts.ALREADY_PAID_TOPIC, pid], index)
                continue
            emit(distributor.address, [contracts.DISTRIBUTED_TOPIC, pid], index)
            emit(
                distributor.token,
                [contracts.TRANSFER_TOPIC, _topic(distributor.address), _topic(e.to)],
                e.amount.to_bytes(32, "big"),
            )
        return logs

    def send(self, raw: bytes) -> SendResult:
        if self.send_refusal is not None:
            raise ChainRejected(f"node refused transaction: {self.send_refusal}")
        tx = Tx.decode(raw)
        self.broadcasts.append(tx.tx_hash)
        if tx.tx_hash in self.mined or tx.nonce < self.mined_nonces.get(tx.sender, 0):
            return SendResult.NONCE_TOO_LOW
        if tx.tx_hash in self.pool:
            return SendResult.ALREADY_KNOWN
        sibling = next(
            (t for t in self.pool.values() if (t.sender, t.nonce) == (tx.sender, tx.nonce)), None
        )
        if sibling is not None:
            factor = 100 + REPLACEMENT_BUMP_PERCENT
            if tx.max_fee * 100 < sibling.max_fee * factor or tx.tip * 100 < sibling.tip * factor:
                return SendResult.UNDERPRICED_REPLACEMENT
            del self.pool[sibling.tx_hash]
        self.pool[tx.tx_hash] = tx
        if self.auto_mine:
            self.mine()
        return SendResult.ACCEPTED

    def estimate(self, sender: str, to: str, data: str) -> int:
        if self.gas_wei.get(sender.lower(), 10**18) == 0:
            raise KeyRejected("insufficient funds for gas")
        distributor = self.distributors.get(to.lower())
        if distributor is None:
            return 21_000
        try:
            effects = distributor.run(sender, data, commit=False)
        except Revert as exc:
            if exc.name in KEY_ERRORS:
                raise KeyRejected(f"reverted: {exc.name}") from exc
            raise ChainRejected(f"reverted: {exc.name}") from exc
        return GAS_PER_BATCH + GAS_PER_PAYMENT * len(effects)

    def distributed_logs(
        self, distributor: str, from_block: int, to_block: int | None
    ) -> list[dict[str, Any]]:
        last = self.block if to_block is None else to_block
        return [
            entry
            for entry in self.logs
            if entry["address"] == distributor.lower()
            and entry["topics"][0] == contracts.DISTRIBUTED_TOPIC
            and from_block <= int(entry["blockNumber"], 16) <= last
        ]


def _topic(address: str) -> str:
    return "0x" + "00" * 12 + address.lower()[2:]


class FakeChain:
    """One connection to ``node`` with one key (``sender``): ``consumer.chain.Chain``'s
    shape. ``down`` cuts this connection only; ``node.down`` cuts every one."""

    def __init__(self, node: FakeNode, sender: str = SENDER) -> None:
        self.node = node
        self.sender = sender
        self.down = False
        self.signatures: list[Signed] = []
        self._chain_id: int | None = None

    def __repr__(self) -> str:
        return f"FakeChain(sender={self.sender})"

    async def chain_id(self) -> int:
        if self._chain_id is None:  # asked once per connection, as the real one does
            await self._io()
            self._chain_id = self.node.chain_id
        return self._chain_id

    async def nonce(self, *, pending: bool) -> int:
        return await self.nonce_of(self.sender, pending=pending)

    async def nonce_of(self, address: str, *, pending: bool) -> int:
        await self._io()
        if pending:
            return self.node.pending_nonce(address)
        return self.node.mined_nonces.get(address.lower(), 0)

    async def latest(self) -> Block:
        await self._io()
        if not self.node.halted:
            if self.node.auto_mine:
                self.node.mine()
            else:
                self.node.new_block()
        return Block(self.node.block, self.node.base_fee, self.node.hash_of(self.node.block) or "")

    async def tagged_block(self, tag: Tag) -> int | None:
        await self._io()
        return self.node.tagged(tag)

    async def block_hash(self, number: int) -> str | None:
        await self._io()
        return self.node.hash_of(number)

    async def base_fee(self) -> int:
        return (await self.latest()).base_fee

    async def gas_balance(self) -> int:
        await self._io()
        return self.node.gas_wei.get(self.sender.lower(), 10**18)

    async def estimate(self, to: str, data: HexStr) -> int:
        await self._io()
        return self.node.estimate(self.sender, to, data)

    async def sign(
        self, *, to: str, data: HexStr, gas: int, nonce: int, max_fee: int, priority_fee: int
    ) -> Signed:
        if self._chain_id is None:
            raise RuntimeError("chain_id() must be awaited before signing")
        fields = {
            "sender": self.sender.lower(),
            "to": to.lower(),
            "data": data,
            "nonce": nonce,
            "gas": gas,
            "max_fee": max_fee,
            "tip": priority_fee,
        }
        raw = json.dumps(fields, sort_keys=True).encode()
        signed = Signed(Tx.decode(raw).tx_hash, raw, nonce, gas, max_fee, priority_fee)
        self.signatures.append(signed)
        self.node.signatures.append(signed)
        return signed

    async def send_raw(self, raw: bytes) -> SendResult:
        await self._io()
        return self.node.send(raw)

    async def receipts(self, tx_hashes: list[str]) -> dict[str, Receipt | None]:
        await self._io()
        return {h: self.node.mined.get(h) for h in tx_hashes}

    async def call(self, to: str, data: bytes) -> bytes:
        raise ChainRejected(f"eth_call to {to}: the fake node serves no view functions")

    async def block_number(self) -> int:
        await self._io()
        return self.node.block

    async def distributed_logs(
        self, distributor: str, from_block: int = 0, to_block: int | None = None
    ) -> list[dict[str, Any]]:
        await self._io()
        return self.node.distributed_logs(distributor, from_block, to_block)

    async def payment_logs(self, distributor: str, payment_id: str) -> list[dict[str, Any]]:
        await self._io()
        logs = self.node.distributed_logs(distributor, 0, None)
        return [entry for entry in logs if entry["topics"][1] == payment_id.lower()]

    async def _io(self) -> None:
        await asyncio.sleep(0)
        if self.down or self.node.down:
            raise ChainUnavailable("fake node: connection refused")


def decoded(signed: Signed) -> tuple[int, list[tuple[bytes, str, int]]]:
    """What a signed batch pays: (first index, [(payment id, recipient, amount)])."""
    return contracts.decode_batch_calldata(Tx.decode(signed.raw).data)
