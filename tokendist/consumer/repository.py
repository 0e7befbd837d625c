"""The consumer's PostgreSQL side. Each method is one transaction; state changes are
guarded by the state they expect, so two workers racing on one event cannot both act."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from tokendist.consumer import queries
from tokendist.consumer.batching.states import BatchState, sources
from tokendist.consumer.chain import Receipt, Signed
from tokendist.consumer.states import State, check_transition
from tokendist.core import db
from tokendist.core.errors import KeyRejected
from tokendist.core.errors import StateConflict as StateConflict  # noqa: PLC0414 -- still importable from here


@dataclass(frozen=True, slots=True)
class Distribution:
    event_id: uuid.UUID
    investment_id: str
    payment_id: str
    user_id: str
    tokenization_id: str
    tokens: int
    state: State
    failure_reason: str | None
    recipient: str | None
    sender: str | None
    nonce: int | None
    tx_hash: str | None
    block_number: int | None
    batch_id: int | None
    payment_index: int | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Distribution:
        values = {name: row[name] for name in cls.__slots__}
        values["tokens"] = int(values["tokens"])
        values["state"] = State(values["state"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Tokenization:
    id: str
    property_id: str
    chain_id: int
    token_address: str
    decimals: int
    distributor_address: str


@dataclass(frozen=True, slots=True)
class User:
    id: str
    kyc_status: str
    wallet_address: str | None

    @property
    def payable(self) -> bool:
        return self.kyc_status == "approved" and self.wallet_address is not None


@dataclass(frozen=True, slots=True)
class StoredTx:
    tx_hash: str
    raw: bytes
    nonce: int
    max_fee_per_gas: int
    priority_fee: int
    created_at: datetime
    broadcast_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> StoredTx:
        return cls(
            tx_hash=row["tx_hash"],
            raw=bytes(row["raw_tx"]),
            nonce=row["nonce"],
            max_fee_per_gas=int(row["max_fee_per_gas"]),
            priority_fee=int(row["priority_fee"]),
            created_at=row["created_at"],
            broadcast_at=row["broadcast_at"],
        )


@dataclass(frozen=True, slots=True)
class Batch:
    id: int
    chain_id: int
    sender: str
    nonce: int
    distributor_address: str
    first_index: int
    size: int
    calldata: bytes
    gas_limit: int
    state: BatchState
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None
    failure_reason: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Batch:
        values = dict(row)
        values["calldata"] = bytes(values["calldata"])
        values["state"] = BatchState(values["state"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class PaymentToSign:
    """A distribution ready to be paid: KYC passed, its recipient known."""

    event_id: uuid.UUID
    payment_id: str
    recipient: str
    tokens: int


@dataclass(frozen=True, slots=True)
class BatchRequest:
    chain_id: int
    sender: str
    distributor: str
    payments: list[PaymentToSign]


# (nonce, first index, the payments kept) -> (the signed attempt, the calldata it carries)
# Awaited inside the transaction that reserves the nonce: a custody that is a remote
# service (KMS) holds the transaction open for one signing round trip, and an outage
# rolls the nonce and the indices back with it.
SignBatch = Callable[[int, int, list[PaymentToSign]], Awaitable[tuple[Signed, bytes]]]


@dataclass(frozen=True, slots=True)
class SignedBatch:
    """What ``sign_batch`` did: the batch stored (None: nothing left to sign), the
    members it took, and those found already paid on-chain (confirmed instead)."""

    batch_id: int | None
    members: list[uuid.UUID]
    recovered: list[uuid.UUID]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """Each member's outcome, read from the batch's receipt."""

    paid: list[uuid.UUID]
    paid_earlier: dict[uuid.UUID, tuple[str, int]]  # by an earlier transaction (hash, block)
    failed: dict[uuid.UUID, str]


@dataclass(frozen=True, slots=True)
class ScannedPayout:
    """A ``Distributed`` log found by the index scan."""

    payment_id: str
    index: int
    tx_hash: str
    block_number: int


@dataclass(frozen=True, slots=True)
class Confirmation:
    """The confirmed payment an event claims to be, as the payment's transaction wrote it."""

    investment_id: str
    user_id: str
    tokenization_id: str
    tokens: int
    provider: str
    provider_reference: str
    payload: str | None  # the whole event as enqueued; NULL in rows older than 0002

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Confirmation:
        values = dict(row)
        values["tokens"] = int(values["tokens"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a Kafka record sits."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Retrying:
    """The oldest record of a partition that is being retried."""

    partition: int
    offset: int
    attempts: int
    error: str
    since: datetime


class Repository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._db = db.Database(pool)
        # Tokenizations are only ever inserted: one found is kept, one missing is asked again.
        self._tokenizations: dict[str, Tokenization] = {}
        self._erc3643: dict[str, str | None] = {}  # by Distributor: its T-REX token, or None

    async def tokenization(self, tokenization_id: str) -> Tokenization | None:
        known = self._tokenizations.get(tokenization_id)
        if known is not None:
            return known
        row = await self._db.fetchrow(queries.TOKENIZATION, tokenization_id)
        if row is None:
            return None
        found = self._tokenizations[tokenization_id] = Tokenization(**dict(row))
        return found

    async def confirmation(self, event_id: uuid.UUID) -> Confirmation | None:
        row = await self._db.fetchrow(queries.CONFIRMATION, event_id)
        return None if row is None else Confirmation.from_row(row)

    async def record_dead_letter(
        self, at: Position, reason: str, detail: str, value_bytes: int
    ) -> None:
        await self._db.execute(
            queries.RECORD_DEAD_LETTER,
            at.topic,
            at.partition,
            at.offset,
            reason,
            detail,
            value_bytes,
        )

    async def keep_dead_letter(
        self, at: Position, key: bytes | None, value: bytes | None, headers: str
    ) -> None:
        """Keep the record's bytes (``headers`` as JSON) where the DLQ topic cannot."""
        await self._db.execute(
            queries.KEEP_DEAD_LETTER, at.topic, at.partition, at.offset, key, value, headers
        )

    async def report_retrying(
        self, group: str, topic: str, retrying: list[Retrying], finished: list[int]
    ) -> None:
        """Publish which owned partitions wait on a record, and which no longer do."""
        async with self._db.transaction() as conn:
            if finished:
                await conn.execute(queries.CLEAR_RETRYING, group, topic, finished)
            for r in retrying:
                await conn.execute(
                    queries.UPSERT_RETRYING,
                    group,
                    topic,
                    r.partition,
                    r.offset,
                    r.attempts,
                    r.error,
                    r.since,
                )

    async def payable_user_or_park(self, dist: Distribution) -> tuple[User | None, Distribution]:
        """The user when KYC-approved with a wallet; else the event parked (awaiting_kyc).
        Check and park share one transaction under the user's KYC lock, which an approval
        also takes: an approval is either seen here or sees the parked event."""
        # An approved user is payable whatever an approval running now does: read without
        # the lock first (one round trip); the lock is needed only to park.
        row = await self._db.fetchrow(queries.USER, dist.user_id)
        if row is not None and User(**dict(row)).payable:
            return User(**dict(row)), dist
        async with self._db.transaction() as conn:
            await conn.execute(queries.LOCK_USER_KYC, dist.user_id)
            user = await conn.fetchrow(queries.USER, dist.user_id)
            if user is not None and User(**dict(user)).payable:
                return User(**dict(user)), dist
            if dist.state is not State.RECEIVED:
                return None, dist
            check_transition(dist.state, State.AWAITING_KYC)
            parked = await conn.fetchrow(
                queries.TRANSITION, dist.event_id, dist.state, State.AWAITING_KYC, None, False
            )
            if parked is None:
                raise StateConflict(str(dist.event_id))
        return None, Distribution.from_row(parked)

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
        """Insert the row for this event unless one exists. Returns (by event id, by
        investment id): a second event for the same investment finds only the latter."""
        rows = await self._db.fetch(
            queries.CLAIM_AND_FIND,
            event_id,
            investment_id,
            payment_id,
            user_id,
            tokenization_id,
            tokens,
            payload,
            partition,
            offset,
        )
        found = {r["found"]: Distribution.from_row(r) for r in reversed(rows)}
        if "inserted" in found:
            return found["inserted"], found["inserted"]
        if "event" in found:
            return found["event"], found.get("investment")
        # Nothing under this event id in the statement's snapshot: a concurrent claim may
        # have committed it while the INSERT waited. Look again, each in a fresh snapshot.
        async with self._db.connection() as conn:
            by_event = await conn.fetchrow(queries.BY_EVENT, event_id)
            by_investment = await conn.fetchrow(queries.BY_INVESTMENT, investment_id)
        return (
            None if by_event is None else Distribution.from_row(by_event),
            None if by_investment is None else Distribution.from_row(by_investment),
        )

    async def get(self, event_id: uuid.UUID) -> Distribution:
        row = await self._db.fetchrow(queries.BY_EVENT, event_id)
        assert row is not None
        return Distribution.from_row(row)

    async def transition(
        self,
        dist: Distribution,
        new: State,
        reason: str | None = None,
        *,
        retryable: bool = False,
    ) -> Distribution:
        """Move ``dist`` on, guarded by its current state. ``retryable`` (failures only):
        nothing can have been paid, so ``tokendist redrive`` may try again."""
        check_transition(dist.state, new)
        row = await self._db.fetchrow(
            queries.TRANSITION, dist.event_id, dist.state, new, reason, retryable
        )
        if row is None:
            raise StateConflict(str(dist.event_id))
        return Distribution.from_row(row)

    async def sync_nonce(self, chain_id: int, sender: str, chain_pending: int) -> int:
        next_nonce: int = await self._db.fetchval(
            queries.SYNC_NONCE, chain_id, sender, chain_pending
        )
        return next_nonce

    async def next_nonce(self, chain_id: int, sender: str) -> int:
        value = await self._db.fetchval(queries.NEXT_NONCE, chain_id, sender)
        return int(value or 0)

    # --- the key pool ---------------------------------------------------------------

    async def register_keys(self, chain_id: int, addresses: list[str]) -> None:
        async with self._db.transaction() as conn:
            for address in addresses:
                await conn.execute(queries.REGISTER_KEY, chain_id, address)

    async def key_states(self, chain_id: int) -> dict[str, str]:
        rows = await self._db.fetch(queries.KEY_STATES, chain_id)
        return {r["address"]: r["state"] for r in rows}

    async def inflight_batches(self, chain_id: int) -> dict[str, int]:
        """Unconfirmed batches per key."""
        rows = await self._db.fetch(queries.INFLIGHT_BATCHES, chain_id)
        return {r["sender"]: int(r["n"]) for r in rows}

    # --- batches --------------------------------------------------------------------

    async def sign_batch(self, request: BatchRequest, sign: SignBatch) -> SignedBatch:
        """Of ``request``'s payments, take those still before signing; confirm at once
        those the index scan found paid on-chain; give the rest a contiguous range of
        indices, reserve the key's next nonce, ``sign`` and store the batch, its first
        attempt and its members, all in one transaction. A nonce or an index is consumed
        only together with the stored transaction that uses it."""
        async with self._db.transaction() as conn:
            state = await conn.fetchval(
                queries.KEY_STATE_FOR_SHARE, request.chain_id, request.sender
            )
            if state != "active":
                raise KeyRejected(f"key {request.sender} is {state or 'not registered'}")
            rows = await conn.fetch(queries.LOCK_SIGNABLE, [p.event_id for p in request.payments])
            signable = {r["event_id"] for r in rows}
            # Each payment once, even if the request named it twice.
            unique = {p.event_id: p for p in request.payments}.values()
            payments = [p for p in unique if p.event_id in signable]
            found = {
                r["payment_id"]: r
                for r in await conn.fetch(
                    queries.FOUND_ON_CHAIN,
                    request.distributor,
                    [p.payment_id for p in payments],
                )
            }
            recovered = []
            for p in [p for p in payments if p.payment_id in found]:
                paid = found[p.payment_id]
                await conn.execute(
                    queries.CONFIRM_FROM_CHAIN,
                    p.event_id,
                    p.recipient,
                    paid["tx_hash"],
                    paid["block_number"],
                    paid["payment_index"],
                    request.distributor,
                )
                recovered.append(p.event_id)
            payments = [p for p in payments if p.payment_id not in found]
            if not payments:
                return SignedBatch(None, [], recovered)
            nonce = await conn.fetchval(queries.LOCK_NONCE, request.chain_id, request.sender)
            if nonce is None:
                raise RuntimeError(f"nonce of {request.sender} not synchronised with the chain")
            first = await conn.fetchval(queries.TAKE_INDICES, request.distributor, len(payments))
            if first is None:
                raise RuntimeError(f"indices of {request.distributor} not rebuilt from the chain")
            signed, calldata = await sign(nonce, int(first), payments)
            batch_id = await conn.fetchval(
                queries.INSERT_BATCH,
                request.chain_id,
                request.sender,
                nonce,
                request.distributor,
                first,
                len(payments),
                calldata,
                signed.gas,
            )
            await _insert_attempt(conn, batch_id, request.chain_id, request.sender, signed)
            await conn.execute(queries.ADVANCE_NONCE, request.chain_id, request.sender, nonce)
            await conn.execute(
                queries.MARK_BATCHED,
                batch_id,
                [p.event_id for p in payments],
                request.distributor,
                request.sender,
                nonce,
                signed.tx_hash,
                [p.recipient for p in payments],
                [first + i for i in range(len(payments))],
            )
        return SignedBatch(batch_id, [p.event_id for p in payments], recovered)

    async def batch(self, batch_id: int) -> Batch:
        row = await self._db.fetchrow(queries.BATCH, batch_id)
        assert row is not None
        return Batch.from_row(row)

    async def batch_members(self, batch_id: int) -> list[Distribution]:
        return [
            Distribution.from_row(r) for r in await self._db.fetch(queries.BATCH_MEMBERS, batch_id)
        ]

    async def attempts(self, batch_id: int) -> list[StoredTx]:
        """The batch's signed attempts (one nonce), oldest first."""
        rows = await self._db.fetch(queries.BATCH_ATTEMPTS, batch_id)
        return [StoredTx.from_row(r) for r in rows]

    async def mark_broadcast(self, tx_hash: str) -> None:
        await self._db.execute(queries.MARK_BROADCAST, tx_hash)

    async def batch_submitted(self, batch: Batch) -> Batch:
        async with self._db.transaction() as conn:
            moved = await _move(conn, batch, BatchState.SUBMITTED)
            await conn.execute(queries.MEMBERS_SUBMITTED, batch.id)
        return moved

    async def batch_mined(self, batch: Batch, receipt: Receipt) -> Batch:
        """In a block, not final yet; the members stay submitted. Mined again: at the
        block that holds it now."""
        async with self._db.transaction() as conn:
            return await _move(
                conn,
                batch,
                BatchState.MINED,
                tx_hash=receipt.tx_hash,
                block=receipt.block_number,
                block_hash=receipt.block_hash,
            )

    async def batch_reorged(self, batch: Batch) -> Batch:
        """Its block is no longer canonical: submitted again, to be broadcast again."""
        row = await self._db.fetchrow(queries.BATCH_REORGED, batch.id, batch.block_hash)
        if row is None:
            raise StateConflict(f"batch {batch.id}")
        return Batch.from_row(row)

    async def batch_confirmed(
        self, batch: Batch, tx_hash: str, block_number: int, outcome: BatchOutcome
    ) -> Batch:
        """Each member's outcome and the batch confirmed, at once: paid by this
        transaction, found paid by an earlier one, or failed (never retryable: its index
        was used by another payment, a human looks)."""
        async with self._db.transaction() as conn:
            moved = await _move(
                conn, batch, BatchState.CONFIRMED, tx_hash=tx_hash, block=block_number
            )
            await conn.execute(
                queries.MEMBERS_CONFIRMED, batch.id, outcome.paid, tx_hash, block_number
            )
            for event_id, (earlier_tx, earlier_block) in outcome.paid_earlier.items():
                await conn.execute(
                    queries.MEMBER_CONFIRMED_EARLIER, batch.id, event_id, earlier_tx, earlier_block
                )
            for event_id, reason in outcome.failed.items():
                await conn.execute(queries.MEMBERS_FAILED, batch.id, [event_id], reason, False)
        return moved

    async def confirm_paid(
        self, dist: Distribution, tx_hash: str, block_number: int
    ) -> Distribution:
        """``dist`` confirmed by the transaction found paying it; guarded by its being
        signed or submitted."""
        row = await self._db.fetchrow(queries.CONFIRM_PAID, dist.event_id, tx_hash, block_number)
        if row is None:
            raise StateConflict(str(dist.event_id))
        return Distribution.from_row(row)

    async def batch_reverted(self, batch: Batch, tx_hash: str, block_number: int) -> Batch:
        """Mined and reverted: nothing was paid, so every member fails retryable."""
        reason = f"reverted: batch {batch.id} tx {tx_hash} in block {block_number}"
        async with self._db.transaction() as conn:
            moved = await _move(
                conn, batch, BatchState.REVERTED, tx_hash=tx_hash, block=block_number, reason=reason
            )
            members = [r["event_id"] for r in await conn.fetch(queries.BATCH_MEMBERS, batch.id)]
            await conn.execute(queries.MEMBERS_FAILED, batch.id, members, reason, True)
        return moved

    async def batch_abandoned(self, batch: Batch, reason: str) -> Batch:
        """The batch's nonce went to another transaction: its members go back to be
        batched again."""
        async with self._db.transaction() as conn:
            moved = await _move(conn, batch, BatchState.ABANDONED, reason=reason)
            await conn.execute(queries.MEMBERS_RELEASED, batch.id)
        return moved

    async def credit(self, event_ids: list[uuid.UUID], batch: Batch | None = None) -> int:
        """Credit every confirmed one of ``event_ids`` (and mark ``batch`` credited) in one
        transaction; returns how many were credited by this call."""
        async with self._db.transaction() as conn:
            if batch is not None:
                await _move(conn, batch, BatchState.CREDITED)
            count: int = await conn.fetchval(queries.CREDIT, event_ids)
        return count

    async def pending_batches(self, chain_id: int, sender: str) -> list[dict[str, Any]]:
        """The newest attempt of every unconfirmed batch of ``sender``, by nonce."""
        rows = await self._db.fetch(queries.PENDING_BATCHES, chain_id, sender)
        return sorted((dict(r) for r in rows), key=lambda r: int(r["nonce"]))

    async def store_attempt(self, batch_id: int, replaces: str, signed: Signed) -> bool:
        """Store a same-nonce sibling of ``replaces`` while the batch is unconfirmed and
        ``replaces`` is still its newest attempt: of several members bumping at once, one
        stores a replacement and the others find it and stand down."""
        async with self._db.transaction() as conn:
            row = await conn.fetchrow(queries.BATCH_FOR_UPDATE, batch_id)
            if row is None or not BatchState(row["state"]).in_flight:
                return False
            if await conn.fetchval(queries.NEWEST_BATCH_TX, batch_id) != replaces:
                return False
            await _insert_attempt(conn, batch_id, row["chain_id"], row["sender"], signed)
        return True

    # --- the index floor ------------------------------------------------------------

    async def erc3643_token(self, distributor: str) -> str | None:
        if distributor not in self._erc3643:
            token = await self._db.fetchval(queries.SUITE_OF_DISTRIBUTOR, distributor)
            self._erc3643[distributor] = token
        return self._erc3643[distributor]

    async def park(self, dist: Distribution, reason: str, detail: str) -> Distribution:
        if dist.state is not State.AWAITING_KYC:
            check_transition(dist.state, State.AWAITING_KYC)
        row = await self._db.fetchrow(queries.PARK, dist.event_id, reason, detail)
        if row is None:
            raise StateConflict(str(dist.event_id))
        return Distribution.from_row(row)

    async def distributors(self, chain_id: int) -> list[str]:
        rows = await self._db.fetch(queries.DISTRIBUTORS_ON_CHAIN, chain_id)
        return [r["distributor_address"] for r in rows]

    async def index_scan(self, distributor: str) -> tuple[int, int]:
        """(next index, last block scanned) of ``distributor``; created at (0, -1)."""
        async with self._db.transaction() as conn:
            await conn.execute(queries.ENSURE_INDICES, distributor)
            row = await conn.fetchrow(queries.INDICES, distributor)
        assert row is not None
        return int(row["next_index"]), int(row["scanned_block"])

    async def record_scan(
        self, distributor: str, payouts: list[ScannedPayout], floor: int, scanned_block: int
    ) -> None:
        """Remember the payouts found and raise the floor past every index they used."""
        async with self._db.transaction() as conn:
            if payouts:
                await conn.execute(
                    queries.RECORD_ONCHAIN,
                    distributor,
                    [p.payment_id for p in payouts],
                    [p.index for p in payouts],
                    [p.tx_hash for p in payouts],
                    [p.block_number for p in payouts],
                )
            await conn.execute(queries.RAISE_INDICES, distributor, floor, scanned_block)

    async def known_transactions(self, tx_hashes: list[str]) -> set[str]:
        rows = await self._db.fetch(queries.KNOWN_TRANSACTIONS, tx_hashes)
        return {r["tx_hash"] for r in rows}


async def _move(
    conn: db.Connection,
    batch: Batch,
    new: BatchState,
    *,
    tx_hash: str | None = None,
    block: int | None = None,
    reason: str | None = None,
    block_hash: str | None = None,
) -> Batch:
    row = await conn.fetchrow(
        queries.SET_BATCH_STATE, batch.id, sources(new), new, tx_hash, block, reason, block_hash
    )
    if row is None:
        raise StateConflict(f"batch {batch.id}")
    return Batch.from_row(row)


async def _insert_attempt(
    conn: db.Connection, batch_id: int, chain_id: int, sender: str, signed: Signed
) -> None:
    await conn.execute(
        queries.INSERT_BATCH_TX,
        signed.tx_hash,
        batch_id,
        chain_id,
        sender,
        signed.nonce,
        signed.raw,
        signed.gas,
        signed.max_fee_per_gas,
        signed.priority_fee,
    )
