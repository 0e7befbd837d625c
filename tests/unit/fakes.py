"""In-memory fakes of the state machine's ports (``consumer.ports``), for unit tests.

``FakeRepository`` mirrors ``consumer.repository.Repository``: every state change is
guarded by the state the caller read (``StateConflict`` when the stored one differs) and
checked against ``consumer.states.TRANSITIONS``, so a move the table forbids fails the
test. A method never yields between its check and its writes, as the real one runs in
one database transaction; it yields once before, as any query does, so that concurrent
callers interleave. Every move is journalled, for tests to assert the path an event took.

``FakeChain`` is one node and one key. Each ``latest`` is a new block (time passes only
when someone asks), a broadcast transaction is mined at once unless told otherwise, and
every signature and broadcast is counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from eth_typing import HexStr

from tokendist.consumer.chain import Block, Receipt, SendResult, Signed
from tokendist.consumer.repository import (
    Confirmation,
    Distribution,
    StateConflict,
    StoredTx,
    Tokenization,
    User,
)
from tokendist.consumer.states import State, check_transition
from tokendist.core.errors import ChainRejected, ChainUnavailable, DatabaseUnavailable
from tokendist.core.settings import Settings
from tokendist.schemas import PaymentConfirmedV1

CHAIN_ID = 31_337
SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OTHER_WALLET = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
TOKENS = 5 * 10**18


class Crashed(Exception):
    """The process died right after a write was committed (a failpoint ``after:<state>``)."""


@dataclass(slots=True)
class _Row:
    dist: Distribution
    payload: str
    retryable: bool = False


@dataclass(slots=True)
class _Tx:
    event_id: uuid.UUID
    chain_id: int
    sender: str
    signed: Signed
    created_at: datetime
    broadcast_at: datetime | None = None


class FakeRepository:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, _Row] = {}
        self.txs: dict[str, _Tx] = {}  # by hash, in insertion order
        self.nonces: dict[tuple[int, str], int] = {}
        self.users: dict[str, User] = {}
        self.confirmations: dict[uuid.UUID, Confirmation] = {}
        self.tokenizations: dict[str, Tokenization] = {}
        self.holdings: dict[tuple[str, str], int] = {}
        self.ledger: list[tuple[uuid.UUID, str, int]] = []  # (event, account, amount)
        self.distributed: set[str] = set()  # investment ids
        self.moves: list[tuple[uuid.UUID, State, State]] = []
        self.down = False
        self.crash_after: State | None = None  # once: the next write reaching this state

    # --- what tests ask ---------------------------------------------------------------

    def path(self, event_id: uuid.UUID) -> list[State]:
        """Every state the event was stored in, in order."""
        if event_id not in self.rows:
            return []
        return [State.RECEIVED, *(new for e, _, new in self.moves if e == event_id)]

    def approve(self, user_id: str, wallet: str | None = WALLET) -> None:
        self.users[user_id] = User(user_id, "approved", wallet)

    def redrive(self, event_id: uuid.UUID) -> bool:
        """``tokendist redrive``'s reset: a retryable failure back to ``received``."""
        row = self.rows[event_id]
        if row.dist.state is not State.FAILED or not row.retryable:
            return False
        self._move(
            event_id,
            {State.FAILED},
            State.RECEIVED,
            retryable=False,
            failure_reason=None,
            recipient=None,
            sender=None,
            nonce=None,
            tx_hash=None,
            block_number=None,
        )
        return True

    def backdate(self, tx_hash: str, seconds: float) -> None:
        """Make a stored transaction ``seconds`` older (created and last sent)."""
        tx = self.txs[tx_hash]
        tx.created_at -= timedelta(seconds=seconds)
        if tx.broadcast_at is not None:
            tx.broadcast_at -= timedelta(seconds=seconds)

    # --- the port ---------------------------------------------------------------------

    async def confirmation(self, event_id: uuid.UUID) -> Confirmation | None:
        await self._io()
        return self.confirmations.get(event_id)

    async def tokenization(self, tokenization_id: str) -> Tokenization | None:
        await self._io()
        return self.tokenizations.get(tokenization_id)

    async def claim(
        self,
        *,
        event_id: uuid.UUID,
        investment_id: str,
        payment_id: str,
        user_id: str,
        tokenization_id: str,
        tokens: int,
        payload: str,
        partition: int,
        offset: int,
    ) -> tuple[Distribution | None, Distribution | None]:
        await self._io()
        if event_id not in self.rows and self._by_investment(investment_id) is None:
            dist = Distribution(
                event_id,
                investment_id,
                payment_id,
                user_id,
                tokenization_id,
                tokens,
                State.RECEIVED,
                None,
                None,
                None,
                None,
                None,
                None,
            )
            self.rows[event_id] = _Row(dist, payload)
            self._crash_if(State.RECEIVED)
        row = self.rows.get(event_id)
        return None if row is None else row.dist, self._by_investment(investment_id)

    async def get(self, event_id: uuid.UUID) -> Distribution:
        await self._io()
        return self.rows[event_id].dist

    async def transition(
        self, dist: Distribution, new: State, reason: str | None = None, *, retryable: bool = False
    ) -> Distribution:
        await self._io()
        check_transition(dist.state, new)
        return self._move(
            dist.event_id, {dist.state}, new, retryable=retryable, failure_reason=reason
        )

    async def payable_user_or_park(self, dist: Distribution) -> tuple[User | None, Distribution]:
        await self._io()
        user = self.users.get(dist.user_id)
        if user is not None and user.payable:
            return user, dist
        if dist.state is not State.RECEIVED:
            return None, dist
        parked = self._move(
            dist.event_id, {dist.state}, State.AWAITING_KYC, retryable=False, failure_reason=None
        )
        return None, parked

    async def inflight(self, sender: str) -> int:
        await self._io()
        return sum(
            1
            for r in self.rows.values()
            if r.dist.sender == sender and r.dist.state in (State.SIGNED, State.SUBMITTED)
        )

    async def sign_and_store(
        self,
        dist: Distribution,
        *,
        chain_id: int,
        sender: str,
        recipient: str,
        sign: Callable[[int], Signed],
    ) -> Distribution:
        await self._io()
        before_signing = {State.RECEIVED, State.AWAITING_KYC}
        current = self.rows.get(dist.event_id)
        if current is None or current.dist.state not in before_signing:
            raise StateConflict(str(dist.event_id))
        nonce = self.nonces.get((chain_id, sender))
        if nonce is None:
            raise RuntimeError(f"nonce of {sender} not synchronised with the chain")
        signed = sign(nonce)
        self._insert_tx(dist.event_id, chain_id, sender, signed)
        self.nonces[(chain_id, sender)] = nonce + 1
        return self._move(
            dist.event_id,
            before_signing,
            State.SIGNED,
            recipient=recipient,
            sender=sender,
            nonce=nonce,
            tx_hash=signed.tx_hash,
        )

    async def transactions(self, event_id: uuid.UUID) -> list[StoredTx]:
        await self._io()
        txs = sorted(
            self._current_txs(event_id), key=lambda t: (t.created_at, t.signed.max_fee_per_gas)
        )
        return [
            StoredTx(
                t.signed.tx_hash,
                t.signed.raw,
                t.signed.nonce,
                t.signed.max_fee_per_gas,
                t.signed.priority_fee,
                t.created_at,
                t.broadcast_at,
            )
            for t in txs
        ]

    async def mark_broadcast(self, tx_hash: str) -> None:
        await self._io()
        if tx_hash in self.txs:
            self.txs[tx_hash].broadcast_at = datetime.now(UTC)

    async def confirm(self, dist: Distribution, tx_hash: str, block_number: int) -> Distribution:
        await self._io()
        on_chain = {State.SIGNED, State.SUBMITTED}
        return self._move(
            dist.event_id, on_chain, State.CONFIRMED, tx_hash=tx_hash, block_number=block_number
        )

    async def credit(self, dist: Distribution, property_id: str) -> Distribution:
        await self._io()

        def book() -> None:
            key = (dist.user_id, dist.tokenization_id)
            self.holdings[key] = self.holdings.get(key, 0) + dist.tokens
            self.ledger.append((dist.event_id, f"distributor:{dist.tokenization_id}", -dist.tokens))
            self.ledger.append((dist.event_id, f"investor:{dist.user_id}", dist.tokens))
            self.distributed.add(dist.investment_id)

        return self._move(dist.event_id, {State.CONFIRMED}, State.CREDITED, also=book)

    async def next_nonce(self, chain_id: int, sender: str) -> int:
        await self._io()
        return self.nonces.get((chain_id, sender), 0)

    async def pending_transactions(self, chain_id: int, sender: str) -> list[dict[str, Any]]:
        await self._io()
        pending = []
        for event_id, row in self.rows.items():
            if row.dist.state not in (State.SIGNED, State.SUBMITTED):
                continue
            txs = [
                t
                for t in self._current_txs(event_id)
                if (t.chain_id, t.sender) == (chain_id, sender)
            ]
            if not txs:
                continue
            newest = max(txs, key=lambda t: t.signed.max_fee_per_gas)
            tk = self.tokenizations[row.dist.tokenization_id]
            pending.append(
                {
                    "event_id": event_id,
                    "tx_hash": newest.signed.tx_hash,
                    "raw_tx": newest.signed.raw,
                    "nonce": newest.signed.nonce,
                    "gas_limit": newest.signed.gas,
                    "max_fee_per_gas": newest.signed.max_fee_per_gas,
                    "priority_fee": newest.signed.priority_fee,
                    "created_at": newest.created_at,
                    "broadcast_at": newest.broadcast_at,
                    "payment_id": row.dist.payment_id,
                    "recipient": row.dist.recipient,
                    "tokens": row.dist.tokens,
                    "distributor_address": tk.distributor_address,
                }
            )
        return sorted(pending, key=lambda r: int(r["nonce"]))

    async def store_replacement(
        self, event_id: uuid.UUID, replaces: str, *, chain_id: int, sender: str, signed: Signed
    ) -> bool:
        await self._io()
        row = self.rows.get(event_id)
        if row is None or row.dist.state not in (State.SIGNED, State.SUBMITTED):
            return False
        newest = max(
            self._current_txs(event_id), key=lambda t: (t.signed.max_fee_per_gas, t.created_at)
        )
        if newest.signed.tx_hash != replaces:
            return False
        self._insert_tx(event_id, chain_id, sender, signed)
        return True

    # --- the guarded write ------------------------------------------------------------

    async def _io(self) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise DatabaseUnavailable("fake database: connection refused")

    def _move(
        self,
        event_id: uuid.UUID,
        expected: set[State],
        new: State,
        *,
        retryable: bool | None = None,
        also: Callable[[], None] | None = None,
        **changes: Any,
    ) -> Distribution:
        """The one guarded state change: the stored state must be one of ``expected``."""
        row = self.rows.get(event_id)
        if row is None or row.dist.state not in expected:
            raise StateConflict(str(event_id))
        old = row.dist.state
        check_transition(old, new)
        row.dist = replace(row.dist, state=new, **changes)
        if retryable is not None:
            row.retryable = retryable
        if also is not None:
            also()
        self.moves.append((event_id, old, new))
        self._crash_if(new)
        return row.dist

    def _crash_if(self, state: State) -> None:
        if self.crash_after is state:
            self.crash_after = None
            raise Crashed(f"after:{state}")

    def _insert_tx(self, event_id: uuid.UUID, chain_id: int, sender: str, signed: Signed) -> None:
        self.txs.setdefault(
            signed.tx_hash, _Tx(event_id, chain_id, sender, signed, datetime.now(UTC))
        )

    def _current_txs(self, event_id: uuid.UUID) -> list[_Tx]:
        dist = self.rows[event_id].dist
        return [
            t
            for t in self.txs.values()
            if t.event_id == event_id and (t.signed.nonce, t.sender) == (dist.nonce, dist.sender)
        ]

    def _by_investment(self, investment_id: str) -> Distribution | None:
        return next(
            (r.dist for r in self.rows.values() if r.dist.investment_id == investment_id), None
        )


class FakeChain:
    def __init__(self, chain_id: int = CHAIN_ID, *, gas: int = 60_000, base_fee: int = 10**9):
        self.sender = SENDER
        self.id = chain_id
        self.gas = gas
        self.base = base_fee
        self.gas_wei = 10**18  # the sender's ETH
        self.block = 1
        self.mined_nonce = 0  # the sender's count as of the latest block
        self.pool: dict[str, Signed] = {}  # broadcast, not mined
        self.mined: dict[str, Receipt] = {}
        self.signatures: list[Signed] = []
        self.broadcasts: list[str] = []  # the hash of every transaction sent to the node
        self.mine_on_send = True
        self.reverting = False  # mined transactions revert
        self.estimate_refusal: str | None = None
        self.send_refusal: str | None = None
        self.down = False
        self._signed: dict[bytes, Signed] = {}
        self._id_known = False

    # --- what tests do ----------------------------------------------------------------

    def mine(self) -> None:
        """A new block with every pooled transaction that is next in nonce order."""
        self.block += 1
        for tx in sorted(self.pool.values(), key=lambda t: t.nonce):
            if tx.nonce == self.mined_nonce:
                self.mined[tx.tx_hash] = Receipt(tx.tx_hash, self.block, not self.reverting)
                self.mined_nonce += 1
        self.pool = {h: t for h, t in self.pool.items() if t.nonce >= self.mined_nonce}

    # --- the port ---------------------------------------------------------------------

    async def chain_id(self) -> int:
        await self._io()
        self._id_known = True
        return self.id

    async def nonce(self, *, pending: bool) -> int:
        await self._io()
        if pending and self.pool:
            return max(self.mined_nonce, max(t.nonce for t in self.pool.values()) + 1)
        return self.mined_nonce

    async def latest(self) -> Block:
        await self._io()
        self.block += 1
        return Block(self.block, self.base)

    async def base_fee(self) -> int:
        return (await self.latest()).base_fee

    async def gas_balance(self) -> int:
        await self._io()
        return self.gas_wei

    def distribute_calldata(self, payment_id: bytes, to: str, amount: int) -> HexStr:
        return HexStr(f"0x{payment_id.hex()}{to.lower()[2:]}{amount:064x}")

    async def estimate(self, to: str, data: HexStr) -> int:
        await self._io()
        if self.estimate_refusal is not None:
            raise ChainRejected(self.estimate_refusal)
        return self.gas

    def sign(
        self, *, to: str, data: HexStr, gas: int, nonce: int, max_fee: int, priority_fee: int
    ) -> Signed:
        if not self._id_known:
            raise RuntimeError("chain_id() must be awaited before signing")
        fields = [self.id, self.sender, to, data, gas, nonce, max_fee, priority_fee]
        raw = json.dumps(fields).encode()
        signed = Signed(
            "0x" + hashlib.sha256(raw).hexdigest(), raw, nonce, gas, max_fee, priority_fee
        )
        self.signatures.append(signed)
        self._signed[raw] = signed
        return signed

    async def send_raw(self, raw: bytes) -> SendResult:
        await self._io()
        if self.send_refusal is not None:
            raise ChainRejected(f"node refused transaction: {self.send_refusal}")
        tx = self._signed[raw]
        self.broadcasts.append(tx.tx_hash)
        if tx.nonce < self.mined_nonce:
            return SendResult.NONCE_TOO_LOW
        if tx.tx_hash in self.pool:
            return SendResult.ALREADY_KNOWN
        sibling = next((t for t in self.pool.values() if t.nonce == tx.nonce), None)
        if sibling is not None and tx.max_fee_per_gas <= sibling.max_fee_per_gas:
            return SendResult.UNDERPRICED_REPLACEMENT
        if sibling is not None:
            del self.pool[sibling.tx_hash]
        self.pool[tx.tx_hash] = tx
        if self.mine_on_send:
            self.mine()
        return SendResult.ACCEPTED

    async def receipts(self, tx_hashes: list[str]) -> dict[str, Receipt | None]:
        await self._io()
        return {h: self.mined.get(h) for h in tx_hashes}

    # Beyond the port: what ``tokendist reconcile`` asks.
    async def block_number(self) -> int:
        return (await self.latest()).number

    async def receipt(self, tx_hash: str) -> Receipt | None:
        return (await self.receipts([tx_hash]))[tx_hash]

    async def _io(self) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise ChainUnavailable("fake node: connection refused")


@dataclass(frozen=True, slots=True)
class FakeRecord:
    """The fields of an aiokafka ``ConsumerRecord`` the consumer reads."""

    key: bytes | None
    value: bytes | None
    topic: str = "payments.confirmed"
    partition: int = 0
    offset: int = 0
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class FakeDeadLetters:
    parked: list[tuple[Any, str, str]] = field(default_factory=list)  # (record, reason, detail)

    @property
    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.parked]

    async def park(self, record: Any, reason: str, detail: str) -> None:
        await asyncio.sleep(0)
        self.parked.append((record, reason, detail))


def settings(**changes: Any) -> Settings:
    """Settings for the state machine on fakes: polls in milliseconds."""
    values: dict[str, Any] = {
        "database_url": "postgresql://unused",
        "kafka_bootstrap": "unused:9092",
        "receipt_poll_s": 0.001,
    }
    return Settings(**(values | changes))


TOKENIZATION = Tokenization(
    id="tok-1",
    property_id="prop-1",
    chain_id=CHAIN_ID,
    token_address="0x" + "11" * 20,
    decimals=18,
    distributor_address="0x" + "22" * 20,
)


def payment(
    user_id: str = "user-1", investment_id: str = "inv-1", **data: Any
) -> PaymentConfirmedV1:
    values: dict[str, Any] = {
        "user_id": user_id,
        "investment_id": investment_id,
        "tokenization_id": TOKENIZATION.id,
        "property_id": TOKENIZATION.property_id,
        "tokens": TOKENS,
        "amount_minor": 500_000,
        "currency": "NGN",
        "wallet_address": WALLET,
        "provider": "paystack",
        "provider_reference": f"ref-{investment_id}",
    }
    return PaymentConfirmedV1.new(occurred_at=datetime.now(UTC), **(values | data))


def confirmation_of(event: PaymentConfirmedV1, *, keep_payload: bool = True) -> Confirmation:
    """The row ``outbox.enqueue`` writes for ``event`` (rows older than migration 0002
    have no payload: ``keep_payload=False``)."""
    d = event.data
    return Confirmation(
        d.investment_id,
        d.user_id,
        d.tokenization_id,
        d.tokens,
        d.provider,
        d.provider_reference,
        event.model_dump_json() if keep_payload else None,
    )


def record_of(event: PaymentConfirmedV1, offset: int = 0) -> FakeRecord:
    return FakeRecord(key=event.data.user_id.encode(), value=event.to_json(), offset=offset)


def world() -> tuple[FakeRepository, FakeChain, FakeDeadLetters]:
    """A tokenization on the fake chain, the sender's nonce in sync, no users yet."""
    repo, chain = FakeRepository(), FakeChain()
    repo.tokenizations[TOKENIZATION.id] = TOKENIZATION
    repo.nonces[(CHAIN_ID, chain.sender)] = 0
    return repo, chain, FakeDeadLetters()


def confirmed_payment(repo: FakeRepository, **data: Any) -> tuple[PaymentConfirmedV1, FakeRecord]:
    """A payment as the payment service confirms it: its confirmation row, its record."""
    event = payment(**data)
    repo.confirmations[event.event_id] = confirmation_of(event)
    return event, record_of(event)
