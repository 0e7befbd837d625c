"""In-memory fakes of the state machine's ports (``consumer.ports``), for unit tests.

``FakeRepository`` is ``consumer.repository.Repository`` (``BatchStore``: the
distributions, the batches and their attempts, the keys' nonces and states, the index
floor) with the same guards as its SQL (``consumer.queries``): every state change is
guarded by the state the caller read (``StateConflict`` when the stored one differs) and
checked against ``consumer.states.TRANSITIONS`` and ``batching.states.BATCH_TRANSITIONS``,
so a move the tables forbid fails the test. A method never yields between its checks
and its writes, and writes nothing when a check fails, as the real one runs in one
database transaction; it yields once before, as any query does, so that concurrent
callers interleave. Every move is journalled, for tests to assert the path an event and
a batch took. ``crash_after`` makes the next write reaching a state raise ``Crashed``
once it is committed: the process died right there.

The chain is in ``tests.unit.fake_chain``; ``tests.unit.members`` runs consumers on both.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tokendist.consumer.batching.states import BATCH_TRANSITIONS, BatchState
from tokendist.consumer.chain import Receipt, Signed
from tokendist.consumer.repository import (
    Batch,
    BatchOutcome,
    BatchRequest,
    Confirmation,
    Distribution,
    ScannedPayout,
    SignBatch,
    SignedBatch,
    StateConflict,
    StoredTx,
    Tokenization,
    User,
)
from tokendist.consumer.states import State, check_transition
from tokendist.core.errors import DatabaseUnavailable

BEFORE_SIGNING = frozenset({State.RECEIVED, State.AWAITING_KYC})
ON_CHAIN = frozenset({State.SIGNED, State.SUBMITTED})


class Crashed(Exception):
    """The process died right after a write was committed (a failpoint ``after:<state>``)."""


@dataclass(slots=True)
class _Row:
    dist: Distribution
    payload: str
    retryable: bool = False
    distributor: str | None = None


@dataclass(slots=True)
class _Attempt:
    batch_id: int
    chain_id: int
    sender: str
    signed: Signed
    created_at: datetime
    broadcast_at: datetime | None = None

    def stored(self) -> StoredTx:
        s = self.signed
        return StoredTx(
            s.tx_hash,
            s.raw,
            s.nonce,
            s.max_fee_per_gas,
            s.priority_fee,
            self.created_at,
            self.broadcast_at,
        )


class FakeRepository:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, _Row] = {}
        self.batches: dict[int, Batch] = {}
        self.attempts_by_hash: dict[str, _Attempt] = {}  # in insertion order
        self.nonces: dict[tuple[int, str], int] = {}
        self.keys: dict[tuple[int, str], str] = {}  # (chain, address) -> state
        self.indices: dict[str, list[int]] = {}  # distributor -> [next index, scanned block]
        self.onchain: dict[tuple[str, str], ScannedPayout] = {}  # (distributor, payment id)
        self.users: dict[str, User] = {}
        self.confirmations: dict[uuid.UUID, Confirmation] = {}
        self.tokenizations: dict[str, Tokenization] = {}
        self.holdings: dict[tuple[str, str], int] = {}
        self.ledger: list[tuple[uuid.UUID, str, int]] = []  # (event, account, amount)
        self.distributed: set[str] = set()  # investment ids
        self.moves: list[tuple[uuid.UUID, State, State]] = []
        self.batch_moves: list[tuple[int, BatchState, BatchState]] = []
        # (key, its batches in flight) at each batch signed: what the in-flight cap bounds.
        self.signed_at_inflight: list[tuple[str, int]] = []
        self.down = False
        self.crash_after: str | None = None  # a State or BatchState: once, after its write
        self._batch_ids = itertools.count(1)

    # --- what tests ask and do --------------------------------------------------------

    def path(self, event_id: uuid.UUID) -> list[State]:
        """Every state the event was stored in, in order."""
        if event_id not in self.rows:
            return []
        return [State.RECEIVED, *(new for e, _, new in self.moves if e == event_id)]

    def batch_path(self, batch_id: int) -> list[BatchState]:
        return [BatchState.SIGNED, *(new for b, _, new in self.batch_moves if b == batch_id)]

    def approve(self, user_id: str, wallet: str | None) -> None:
        self.users[user_id] = User(user_id, "approved", wallet)

    def redrive(self, event_id: uuid.UUID) -> bool:
        """``tokendist redrive``'s reset (``ops.queries.RESET_TO_RECEIVED``): a retryable
        failure back to ``received``. Like that statement it leaves ``batch_id`` and
        ``payment_index`` as they were (the next batch overwrites them)."""
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
        """Make a stored attempt ``seconds`` older (created and last sent)."""
        attempt = self.attempts_by_hash[tx_hash]
        attempt.created_at -= timedelta(seconds=seconds)
        if attempt.broadcast_at is not None:
            attempt.broadcast_at -= timedelta(seconds=seconds)

    def state_of(self, event_id: uuid.UUID) -> State:
        return self.rows[event_id].dist.state

    # --- DistributionStore --------------------------------------------------------------

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
                *(None,) * 8,
            )
            self.rows[event_id] = _Row(dist, payload)
            self._crash_if([State.RECEIVED])
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
        moved = self._move(
            dist.event_id, {dist.state}, new, retryable=retryable, failure_reason=reason
        )
        self._crash_if([new])
        return moved

    async def payable_user_or_park(self, dist: Distribution) -> tuple[User | None, Distribution]:
        await self._io()
        user = self.users.get(dist.user_id)
        if user is not None and user.payable:
            return user, dist
        if dist.state is not State.RECEIVED:
            return None, dist
        parked = self._move(dist.event_id, {State.RECEIVED}, State.AWAITING_KYC, retryable=False)
        self._crash_if([State.AWAITING_KYC])
        return None, parked

    async def credit(self, event_ids: list[uuid.UUID], batch: Batch | None = None) -> int:
        await self._io()
        if batch is not None:
            self._move_batch(batch, BatchState.CREDITED)
        count = 0
        for event_id in dict.fromkeys(event_ids):
            row = self.rows.get(event_id)
            if row is None or row.dist.state is not State.CONFIRMED:
                continue
            dist = self._move(event_id, {State.CONFIRMED}, State.CREDITED)
            key = (dist.user_id, dist.tokenization_id)
            self.holdings[key] = self.holdings.get(key, 0) + dist.tokens
            self.ledger.append((event_id, f"distributor:{dist.tokenization_id}", -dist.tokens))
            self.ledger.append((event_id, f"investor:{dist.user_id}", dist.tokens))
            self.distributed.add(dist.investment_id)
            count += 1
        self._crash_if([State.CREDITED] if count or batch is not None else [])
        return count

    # --- KeyBook ------------------------------------------------------------------------

    async def register_keys(self, chain_id: int, addresses: list[str]) -> None:
        await self._io()
        for address in addresses:
            self.keys.setdefault((chain_id, address), "active")

    async def key_states(self, chain_id: int) -> dict[str, str]:
        await self._io()
        return {address: state for (c, address), state in self.keys.items() if c == chain_id}

    async def inflight_batches(self, chain_id: int) -> dict[str, int]:
        await self._io()
        counts: dict[str, int] = {}
        for b in self.batches.values():
            if b.chain_id == chain_id and b.state.in_flight:
                counts[b.sender] = counts.get(b.sender, 0) + 1
        return counts

    # --- BatchStore ---------------------------------------------------------------------

    async def sign_batch(self, request: BatchRequest, sign: SignBatch) -> SignedBatch:
        await self._io()
        payments = [
            p
            for p in request.payments
            if p.event_id in self.rows and self.rows[p.event_id].dist.state in BEFORE_SIGNING
        ]
        found = {
            p.event_id: self.onchain[(request.distributor, p.payment_id)]
            for p in payments
            if (request.distributor, p.payment_id) in self.onchain
        }
        payments = [p for p in payments if p.event_id not in found]
        if not payments:
            self._confirm_found(request, found)
            self._crash_if([State.CONFIRMED] if found else [])
            return SignedBatch(None, [], list(found))
        nonce = self.nonces.get((request.chain_id, request.sender))
        if nonce is None:
            raise RuntimeError(f"nonce of {request.sender} not synchronised with the chain")
        if request.distributor not in self.indices:
            raise RuntimeError(f"indices of {request.distributor} not rebuilt from the chain")
        first = self.indices[request.distributor][0]
        signed, calldata = await sign(nonce, first, payments)  # raises: nothing written
        self._confirm_found(request, found)
        batch_id = next(self._batch_ids)
        inflight = [b for b in self.batches.values() if b.state.in_flight]
        self.signed_at_inflight.append(
            (request.sender, sum(b.sender == request.sender for b in inflight))
        )
        self.batches[batch_id] = Batch(
            batch_id,
            request.chain_id,
            request.sender,
            nonce,
            request.distributor,
            first,
            len(payments),
            calldata,
            signed.gas,
            BatchState.SIGNED,
            None,
            None,
            None,
            None,
        )
        self._insert_attempt(batch_id, request.chain_id, request.sender, signed)
        self.nonces[(request.chain_id, request.sender)] = nonce + 1
        self.indices[request.distributor][0] = first + len(payments)
        # One UPDATE over the batch's rows: a payment listed twice is one row, moved once.
        for i, p in {p.event_id: (i, p) for i, p in reversed(list(enumerate(payments)))}.values():
            self._move(
                p.event_id,
                BEFORE_SIGNING,
                State.SIGNED,
                distributor=request.distributor,
                batch_id=batch_id,
                recipient=p.recipient,
                payment_index=first + i,
                sender=request.sender,
                nonce=nonce,
                tx_hash=signed.tx_hash,
            )
        self._crash_if([State.SIGNED])
        return SignedBatch(batch_id, [p.event_id for p in payments], list(found))

    async def batch(self, batch_id: int) -> Batch:
        await self._io()
        return self.batches[batch_id]

    async def batch_members(self, batch_id: int) -> list[Distribution]:
        await self._io()
        return self._members(batch_id)

    async def attempts(self, batch_id: int) -> list[StoredTx]:
        await self._io()
        attempts = [a for a in self.attempts_by_hash.values() if a.batch_id == batch_id]
        attempts.sort(key=lambda a: (a.created_at, a.signed.max_fee_per_gas))
        return [a.stored() for a in attempts]

    async def mark_broadcast(self, tx_hash: str) -> None:
        await self._io()
        if tx_hash in self.attempts_by_hash:
            self.attempts_by_hash[tx_hash].broadcast_at = datetime.now(UTC)

    async def batch_submitted(self, batch: Batch) -> Batch:
        await self._io()
        moved = self._move_batch(batch, BatchState.SUBMITTED)
        for m in self._members(batch.id, {State.SIGNED}):
            self._move(m.event_id, {State.SIGNED}, State.SUBMITTED)
        self._crash_if([BatchState.SUBMITTED])
        return moved

    async def batch_mined(self, batch: Batch, receipt: Receipt) -> Batch:
        await self._io()
        moved = self._move_batch(
            batch,
            BatchState.MINED,
            tx_hash=receipt.tx_hash,
            block=receipt.block_number,
            block_hash=receipt.block_hash,
        )
        self._crash_if([BatchState.MINED])
        return moved

    async def batch_reorged(self, batch: Batch) -> Batch:
        await self._io()
        stored = self.batches.get(batch.id)
        if stored is None or stored.block_hash != batch.block_hash:
            raise StateConflict(f"batch {batch.id}")  # seen mined elsewhere meanwhile
        moved = self._move_batch(batch, BatchState.SUBMITTED)
        moved = self.batches[batch.id] = replace(moved, block_number=None, block_hash=None)
        return moved

    async def batch_confirmed(
        self, batch: Batch, tx_hash: str, block_number: int, outcome: BatchOutcome
    ) -> Batch:
        await self._io()
        moved = self._move_batch(batch, BatchState.CONFIRMED, tx_hash=tx_hash, block=block_number)
        members = {m.event_id for m in self._members(batch.id, ON_CHAIN)}
        for event_id in members & set(outcome.paid):
            self._move(
                event_id, ON_CHAIN, State.CONFIRMED, tx_hash=tx_hash, block_number=block_number
            )
        for event_id, (earlier_tx, earlier_block) in outcome.paid_earlier.items():
            if event_id in members:
                self._move(
                    event_id,
                    ON_CHAIN,
                    State.CONFIRMED,
                    tx_hash=earlier_tx,
                    block_number=earlier_block,
                )
        for event_id, reason in outcome.failed.items():
            if event_id in members:
                self._move(event_id, ON_CHAIN, State.FAILED, failure_reason=reason, retryable=False)
        self._crash_if([BatchState.CONFIRMED])
        return moved

    async def batch_reverted(self, batch: Batch, tx_hash: str, block_number: int) -> Batch:
        await self._io()
        reason = f"reverted: batch {batch.id} tx {tx_hash} in block {block_number}"
        moved = self._move_batch(
            batch, BatchState.REVERTED, tx_hash=tx_hash, block=block_number, reason=reason
        )
        for m in self._members(batch.id, ON_CHAIN):
            self._move(m.event_id, ON_CHAIN, State.FAILED, failure_reason=reason, retryable=True)
        self._crash_if([BatchState.REVERTED])
        return moved

    async def batch_abandoned(self, batch: Batch, reason: str) -> Batch:
        await self._io()
        moved = self._move_batch(batch, BatchState.ABANDONED, reason=reason)
        for m in self._members(batch.id, ON_CHAIN):
            self._move(
                m.event_id,
                ON_CHAIN,
                State.RECEIVED,
                batch_id=None,
                payment_index=None,
                sender=None,
                nonce=None,
                tx_hash=None,
            )
        self._crash_if([BatchState.ABANDONED])
        return moved

    async def pending_batches(self, chain_id: int, sender: str) -> list[dict[str, Any]]:
        await self._io()
        pending = []
        for b in self.batches.values():
            if (b.chain_id, b.sender) != (chain_id, sender) or not b.state.in_flight:
                continue
            newest = self._newest(b.id)
            pending.append(
                {
                    "batch_id": b.id,
                    "distributor_address": b.distributor_address,
                    "calldata": b.calldata,
                    "gas_limit": b.gas_limit,
                    "tx_hash": newest.signed.tx_hash,
                    "raw_tx": newest.signed.raw,
                    "nonce": newest.signed.nonce,
                    "max_fee_per_gas": newest.signed.max_fee_per_gas,
                    "priority_fee": newest.signed.priority_fee,
                    "created_at": newest.created_at,
                    "broadcast_at": newest.broadcast_at,
                }
            )
        return sorted(pending, key=lambda r: int(r["nonce"]))

    async def store_attempt(self, batch_id: int, replaces: str, signed: Signed) -> bool:
        await self._io()
        batch = self.batches.get(batch_id)
        if batch is None or not batch.state.in_flight:
            return False
        if self._newest(batch_id).signed.tx_hash != replaces:
            return False
        self._insert_attempt(batch_id, batch.chain_id, batch.sender, signed)
        return True

    async def sync_nonce(self, chain_id: int, sender: str, chain_pending: int) -> int:
        await self._io()
        key = (chain_id, sender)
        self.nonces[key] = max(self.nonces.get(key, chain_pending), chain_pending)
        return self.nonces[key]

    async def next_nonce(self, chain_id: int, sender: str) -> int:
        await self._io()
        return self.nonces.get((chain_id, sender), 0)

    async def distributors(self, chain_id: int) -> list[str]:
        await self._io()
        return sorted(
            {t.distributor_address for t in self.tokenizations.values() if t.chain_id == chain_id}
        )

    async def erc3643_token(self, distributor: str) -> str | None:
        await self._io()
        return None  # the fakes' tokenizations are plain ERC-20s

    async def park(self, dist: Distribution, reason: str, detail: str) -> Distribution:
        raise AssertionError("only an ERC-3643 token's payments are parked by the pre-flight")

    async def index_scan(self, distributor: str) -> tuple[int, int]:
        await self._io()
        next_index, scanned = self.indices.setdefault(distributor, [0, -1])
        return next_index, scanned

    async def record_scan(
        self, distributor: str, payouts: list[ScannedPayout], floor: int, scanned_block: int
    ) -> None:
        await self._io()
        for p in payouts:
            self.onchain.setdefault((distributor, p.payment_id), p)
        indices = self.indices[distributor]
        indices[0], indices[1] = max(indices[0], floor), max(indices[1], scanned_block)

    async def known_transactions(self, tx_hashes: list[str]) -> set[str]:
        await self._io()
        return set(tx_hashes) & set(self.attempts_by_hash)

    # --- the guarded writes -------------------------------------------------------------

    async def _io(self) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise DatabaseUnavailable("fake database: connection refused")

    def _move(
        self,
        event_id: uuid.UUID,
        expected: Iterable[State],
        new: State,
        *,
        retryable: bool | None = None,
        distributor: str | None = None,
        **changes: Any,
    ) -> Distribution:
        """The one guarded state change of a distribution."""
        row = self.rows.get(event_id)
        if row is None or row.dist.state not in set(expected):
            raise StateConflict(str(event_id))
        old = row.dist.state
        check_transition(old, new)
        row.dist = replace(row.dist, state=new, **changes)
        if retryable is not None:
            row.retryable = retryable
        if distributor is not None:
            row.distributor = distributor
        self.moves.append((event_id, old, new))
        return row.dist

    def _move_batch(
        self,
        batch: Batch,
        new: BatchState,
        *,
        tx_hash: str | None = None,
        block: int | None = None,
        reason: str | None = None,
        block_hash: str | None = None,
    ) -> Batch:
        """The one guarded state change of a batch: from any state the table allows."""
        stored = self.batches.get(batch.id)
        if stored is None or new not in BATCH_TRANSITIONS[stored.state]:
            raise StateConflict(f"batch {batch.id}")
        moved = replace(
            stored,
            state=new,
            tx_hash=tx_hash or stored.tx_hash,
            block_number=block if block is not None else stored.block_number,
            block_hash=block_hash or stored.block_hash,
            failure_reason=reason or stored.failure_reason,
        )
        self.batches[batch.id] = moved
        self.batch_moves.append((batch.id, stored.state, new))
        return moved

    def _confirm_found(self, request: BatchRequest, found: dict[uuid.UUID, ScannedPayout]) -> None:
        """Payments the index scan found paid on-chain: confirmed by that payout."""
        for p in request.payments:
            if p.event_id in found:
                paid = found[p.event_id]
                self._move(
                    p.event_id,
                    BEFORE_SIGNING,
                    State.CONFIRMED,
                    distributor=request.distributor,
                    recipient=p.recipient,
                    tx_hash=paid.tx_hash,
                    block_number=paid.block_number,
                    payment_index=paid.index,
                )

    def _crash_if(self, reached: list[str]) -> None:
        if self.crash_after is not None and self.crash_after in reached:
            crashed, self.crash_after = self.crash_after, None
            raise Crashed(f"after:{crashed}")

    def _insert_attempt(self, batch_id: int, chain_id: int, sender: str, signed: Signed) -> None:
        self.attempts_by_hash.setdefault(
            signed.tx_hash, _Attempt(batch_id, chain_id, sender, signed, datetime.now(UTC))
        )

    def _newest(self, batch_id: int) -> _Attempt:
        return max(
            (a for a in self.attempts_by_hash.values() if a.batch_id == batch_id),
            key=lambda a: (a.signed.max_fee_per_gas, a.created_at),
        )

    def _members(self, batch_id: int, states: Iterable[State] | None = None) -> list[Distribution]:
        wanted = None if states is None else set(states)
        members = [
            r.dist
            for r in self.rows.values()
            if r.dist.batch_id == batch_id and (wanted is None or r.dist.state in wanted)
        ]
        return sorted(members, key=lambda d: d.payment_index or 0)

    def _by_investment(self, investment_id: str) -> Distribution | None:
        return next(
            (r.dist for r in self.rows.values() if r.dist.investment_id == investment_id), None
        )


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
