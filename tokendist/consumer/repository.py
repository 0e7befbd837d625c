"""The consumer's PostgreSQL side. Each method is one transaction; state changes are
guarded by the state they expect, so two workers racing on one event cannot both act."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from tokendist.consumer import queries
from tokendist.consumer.chain import Signed
from tokendist.consumer.states import State, check_transition
from tokendist.core import db
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

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Distribution:
        values = dict(row)
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
        async with self._db.connection() as conn:
            await conn.execute(
                queries.CLAIM,
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

    async def inflight(self, sender: str) -> int:
        count: int = await self._db.fetchval(queries.INFLIGHT, sender)
        return count

    async def sign_and_store(
        self,
        dist: Distribution,
        *,
        chain_id: int,
        sender: str,
        recipient: str,
        sign: Callable[[int], Signed],
    ) -> Distribution:
        """Reserve the sender's next nonce, sign, store the transaction and mark the event
        signed, all in one transaction: a nonce is consumed only together with a stored
        transaction that uses it, so a crash can never leave a reserved-but-unsigned gap."""
        async with self._db.transaction() as conn:
            current = await conn.fetchrow(queries.BY_EVENT_FOR_UPDATE, dist.event_id)
            if current is None or not State(current["state"]).before_signing:
                raise StateConflict(str(dist.event_id))
            nonce = await conn.fetchval(queries.LOCK_NONCE, chain_id, sender)
            if nonce is None:
                raise RuntimeError(f"nonce of {sender} not synchronised with the chain")
            signed = sign(nonce)
            await _insert_tx(conn, dist.event_id, chain_id, sender, signed)
            await conn.execute(queries.ADVANCE_NONCE, chain_id, sender, nonce)
            row = await conn.fetchrow(
                queries.MARK_SIGNED, dist.event_id, recipient, sender, nonce, signed.tx_hash
            )
            assert row is not None  # locked above, so still there
        return Distribution.from_row(row)

    async def store_replacement(
        self, event_id: uuid.UUID, replaces: str, *, chain_id: int, sender: str, signed: Signed
    ) -> bool:
        """Store a fee-bumped sibling (same nonce) of ``replaces``, only while the event is
        unconfirmed and ``replaces`` is still its newest transaction: of several members
        bumping at once, one stores a replacement and the others find it and stand down."""
        async with self._db.transaction() as conn:
            current = await conn.fetchrow(queries.BY_EVENT_FOR_UPDATE, event_id)
            if current is None or not State(current["state"]).on_chain:
                return False
            if await conn.fetchval(queries.NEWEST_TX, event_id) != replaces:
                return False
            await _insert_tx(conn, event_id, chain_id, sender, signed)
        return True

    async def transactions(self, event_id: uuid.UUID) -> list[StoredTx]:
        rows = await self._db.fetch(queries.TRANSACTIONS_OF, event_id)
        return [StoredTx.from_row(r) for r in rows]

    async def mark_broadcast(self, tx_hash: str) -> None:
        await self._db.execute(queries.MARK_BROADCAST, tx_hash)

    async def confirm(self, dist: Distribution, tx_hash: str, block_number: int) -> Distribution:
        row = await self._db.fetchrow(queries.MARK_CONFIRMED, dist.event_id, tx_hash, block_number)
        if row is None:
            raise StateConflict(str(dist.event_id))
        return Distribution.from_row(row)

    async def credit(self, dist: Distribution, property_id: str) -> Distribution:
        """Holdings += tokens, the ledger pair, the investment's status and the state, in
        one transaction guarded by the 'confirmed' state: a second credit finds nothing."""
        async with self._db.transaction() as conn:
            row = await conn.fetchrow(queries.MARK_CREDITED, dist.event_id)
            if row is None:
                raise StateConflict(str(dist.event_id))
            await conn.execute(
                queries.CREDIT_HOLDING,
                dist.user_id,
                dist.tokenization_id,
                property_id,
                dist.tokens,
            )
            await conn.execute(
                queries.LEDGER_PAIR,
                dist.event_id,
                dist.tokenization_id,
                dist.tokens,
                dist.user_id,
            )
            await conn.execute(queries.MARK_INVESTMENT_DISTRIBUTED, dist.investment_id)
        return Distribution.from_row(row)

    async def pending_transactions(self, chain_id: int, sender: str) -> list[dict[str, Any]]:
        rows = await self._db.fetch(queries.PENDING_TRANSACTIONS, chain_id, sender)
        return sorted((dict(r) for r in rows), key=lambda r: int(r["nonce"]))


async def _insert_tx(
    conn: db.Connection,
    event_id: uuid.UUID,
    chain_id: int,
    sender: str,
    signed: Signed,
) -> None:
    await conn.execute(
        queries.INSERT_TX,
        signed.tx_hash,
        event_id,
        chain_id,
        sender,
        signed.nonce,
        signed.raw,
        signed.gas,
        signed.max_fee_per_gas,
        signed.priority_fee,
    )
