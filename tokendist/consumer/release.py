"""The re-check of parked ERC-3643 payments: every ``parked_recheck_interval_s`` one
member of the group (whichever takes the advisory lock) asks the pre-flight again for
each payment parked by it, and releases each one it no longer refuses (token unpaused,
wallet unfrozen, identity registered, compliance module's settings changed): back to
received with its event published again, in one transaction, exactly as ``kyc approve``
re-drives an approval's parked events. The consumer then batches it as any payment, and
asks the pre-flight once more before signing: a condition back meanwhile parks it again.

Asking the same questions as the gatherer, rather than following the token's events,
needs no event cursor and cannot miss a cause (a module's setting has no common event).
A payment still refused keeps its row, its reason updated if it changed. A side task of
the consumer: an outage is logged and tried again next interval.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import NoReturn, Protocol

import asyncpg
import structlog

from tokendist.consumer import compliance, queries
from tokendist.core import db, periodic
from tokendist.outbox.enqueue import write_outbox_row
from tokendist.schemas import PaymentConfirmedV1

log = structlog.get_logger("tokendist.release")

# Payments asked in one pre-flight: each costs three eth_calls at once.
CHUNK = 100
RECHECK_LOCK = "tokendist-parked-recheck"


@dataclass(frozen=True, slots=True)
class Parked:
    event_id: uuid.UUID
    wallet: str
    tokens: int
    token: str
    distributor: str
    reason: str
    detail: str | None


class Node(Protocol):
    async def chain_id(self) -> int: ...

    async def call(self, to: str, data: bytes) -> bytes: ...


class ParkedRows:
    """The PostgreSQL side of the re-check."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._db = db.Database(pool)

    def exclusive(self) -> AbstractAsyncContextManager[bool]:
        """True while this member holds the re-check's lock (False: another does)."""
        return self._db.try_lock(RECHECK_LOCK)

    async def parked(self, chain_id: int) -> list[Parked]:
        rows = await self._db.fetch(queries.PARKED_ON_CHAIN, chain_id)
        return [
            Parked(
                event_id=r["event_id"],
                wallet=r["wallet_address"],
                tokens=int(r["tokens"]),
                token=r["token_address"],
                distributor=r["distributor_address"],
                reason=r["parked_reason"],
                detail=r["parked_detail"],
            )
            for r in rows
        ]

    async def release(self, event_ids: list[uuid.UUID]) -> int:
        async with self._db.transaction() as conn:
            rows = await conn.fetch(queries.RELEASE_PARKED, event_ids)
            for r in rows:
                await write_outbox_row(conn, PaymentConfirmedV1.model_validate_json(r["payload"]))
        return len(rows)

    async def repark(self, event_id: uuid.UUID, reason: str, detail: str) -> None:
        await self._db.execute(queries.REPARK, event_id, reason, detail)


class Releaser:
    def __init__(self, store: ParkedRows, node: Node, *, interval_s: float) -> None:
        self.store = store
        self.node = node
        self.interval_s = interval_s

    async def run(self) -> NoReturn:
        await periodic.every(self.interval_s, self.tick, log, "parked_recheck_failed")

    async def tick(self) -> int:
        """One re-check, if no other member is running one; returns payments released."""
        async with self.store.exclusive() as held:
            if not held:
                return 0
            parked = await self.store.parked(await self.node.chain_id())
            by_distributor: dict[tuple[str, str], list[Parked]] = defaultdict(list)
            for p in parked:
                by_distributor[(p.token, p.distributor)].append(p)
            cleared: list[uuid.UUID] = []
            for (token, distributor), payments in by_distributor.items():
                cleared += await self._ask(token, distributor, payments)
            released = await self.store.release(cleared) if cleared else 0
        if released:
            log.info(
                "parked_payments_released", released=released, still_parked=len(parked) - released
            )
        return released

    async def _ask(self, token: str, distributor: str, payments: list[Parked]) -> list[uuid.UUID]:
        """The payments the pre-flight no longer refuses; the others' reasons kept current.
        Chunks are asked apart, so a wallet's payments in two chunks are not summed: the
        gatherer's own pre-flight, which sums each batch, parks any that would not fit."""
        cleared = []
        for start in range(0, len(payments), CHUNK):
            chunk = payments[start : start + CHUNK]
            refused = await compliance.preflight(
                self.node.call,
                token,
                distributor,
                [(p.event_id, p.wallet, p.tokens) for p in chunk],
            )
            for p in chunk:
                refusal = refused.get(p.event_id)
                if refusal is None:
                    cleared.append(p.event_id)
                elif (refusal.reason, refusal.detail) != (p.reason, p.detail):
                    await self.store.repark(p.event_id, refusal.reason, refusal.detail)
        return cleared
