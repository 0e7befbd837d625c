"""The operator tools' PostgreSQL side: every statement of ``tokendist.ops.queries`` runs
here, through ``db.Database``, so an outage reaches a tool as ``DatabaseUnavailable``.

Built over what the tool was handed: one connection (a command's), or a pool (reconcile's,
shared with the consumer's ``Repository``, whose guarded transitions it reuses).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import asyncpg

from tokendist.consumer.repository import Distribution
from tokendist.core import db
from tokendist.core.errors import InvalidInput
from tokendist.ops import queries
from tokendist.outbox.enqueue import write_outbox_row
from tokendist.schemas import PaymentConfirmedV1


class ToolRepository:
    def __init__(self, target: asyncpg.Pool | db.Connection) -> None:
        self._db = db.Database(target)

    # --- chain deploy, chain rotate-operator -----------------------------------------

    async def distributor_of(self, tokenization_id: str) -> str | None:
        """The Distributor recorded for ``tokenization_id``; None when none is recorded."""
        address: str | None = await self._db.fetchval(queries.DISTRIBUTOR_OF, tokenization_id)
        return address

    async def record_tokenization(
        self,
        *,
        tokenization_id: str,
        property_id: str,
        chain_id: int,
        token_address: str,
        decimals: int,
        distributor_address: str,
    ) -> bool:
        """Record a deployed tokenization; False when its id was recorded first."""
        try:
            await self._db.execute(
                queries.RECORD_TOKENIZATION,
                tokenization_id,
                property_id,
                chain_id,
                token_address,
                decimals,
                distributor_address,
            )
        except asyncpg.UniqueViolationError:
            return False
        return True

    # --- keys ----------------------------------------------------------------------

    async def chain_distributors(self, chain_id: int) -> list[asyncpg.Record]:
        """The tokenizations (id, distributor_address) recorded on ``chain_id``."""
        return await self._db.fetch(queries.K_CHAIN_DISTRIBUTORS, chain_id)

    async def keys(self, chain_id: int) -> list[asyncpg.Record]:
        """The operator keys of ``chain_id``: address, state, next_nonce, inflight."""
        return await self._db.fetch(queries.K_KEYS, chain_id)

    async def key_state(self, chain_id: int, address: str) -> str | None:
        state: str | None = await self._db.fetchval(queries.K_KEY_STATE, chain_id, address)
        return state

    async def activate_key(self, chain_id: int, address: str) -> None:
        await self._db.execute(queries.K_ACTIVATE, chain_id, address)

    async def drain_key(self, chain_id: int, address: str) -> None:
        await self._db.execute(queries.K_DRAIN, chain_id, address)

    async def key_inflight(self, chain_id: int, address: str) -> int:
        count: int = await self._db.fetchval(queries.K_INFLIGHT, chain_id, address)
        return count

    async def mark_key_removed(self, chain_id: int, address: str) -> None:
        await self._db.execute(queries.K_MARK_REMOVED, chain_id, address)

    # --- verify ----------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        """Distributions by state."""
        return {r["state"]: r["n"] for r in await self._db.fetch(queries.V_COUNTS)}

    async def undistributed(self, grace_s: float) -> list[asyncpg.Record]:
        """Payments confirmed more than ``grace_s`` ago with no distribution."""
        return await self._db.fetch(queries.V_UNDISTRIBUTED, grace_s)

    async def unconfirmed_distributions(self) -> list[asyncpg.Record]:
        return await self._db.fetch(queries.V_DISTRIBUTION_WITHOUT_CONFIRMATION)

    async def tokenizations(self) -> list[asyncpg.Record]:
        return await self._db.fetch(queries.V_TOKENIZATIONS)

    async def onchain_distributions(self) -> list[asyncpg.Record]:
        return await self._db.fetch(queries.V_ONCHAIN_DISTRIBUTIONS)

    async def holdings_mismatches(self) -> list[asyncpg.Record]:
        return await self._db.fetch(queries.V_HOLDINGS_MISMATCH)

    async def unbalanced_ledger_events(self) -> list[asyncpg.Record]:
        return await self._db.fetch(queries.V_LEDGER_UNBALANCED)

    async def ledger_total(self) -> int:
        total: int = await self._db.fetchval(queries.V_LEDGER_TOTAL)
        return total

    async def recipient_totals(self) -> list[asyncpg.Record]:
        return await self._db.fetch(queries.V_RECIPIENT_TOTALS)

    async def stale_outbox(self, grace_s: float) -> asyncpg.Record | None:
        return await self._db.fetchrow(queries.V_STALE_OUTBOX, grace_s)

    async def stuck_distributions(self, grace_s: float) -> list[asyncpg.Record]:
        return await self._db.fetch(queries.V_STUCK_DISTRIBUTIONS, grace_s)

    # --- status ----------------------------------------------------------------------

    async def outbox_summary(self) -> asyncpg.Record | None:
        return await self._db.fetchrow(queries.S_OUTBOX)

    async def parked_users(self) -> int:
        count: int = await self._db.fetchval(queries.S_PARKED_USERS)
        return count

    async def dead_letter_summary(self, topic: str) -> asyncpg.Record | None:
        return await self._db.fetchrow(queries.S_DEAD_LETTERS, topic)

    async def retrying(self, group: str, topic: str) -> list[asyncpg.Record]:
        return await self._db.fetch(queries.S_RETRYING, group, topic)

    async def last_failures(self) -> list[asyncpg.Record]:
        return await self._db.fetch(queries.S_LAST_FAILURES)

    async def last_dead_letters(self, topic: str) -> list[asyncpg.Record]:
        return await self._db.fetch(queries.S_LAST_DEAD_LETTERS, topic)

    # --- reconcile -------------------------------------------------------------------

    async def stale_on_chain(self, grace_s: float) -> list[Distribution]:
        """Distributions on-chain but not credited, idle for more than ``grace_s``."""
        rows = await self._db.fetch(queries.R_STALE_ON_CHAIN, grace_s)
        return [Distribution.from_row(r) for r in rows]

    async def lost_events(self, grace_s: float) -> list[asyncpg.Record]:
        """Confirmed payments without a distribution after ``grace_s``, with their event."""
        return await self._db.fetch(queries.R_UNDISTRIBUTED, grace_s)

    async def republish(self, payload: str) -> None:
        """Publish the event ``payload`` again through the outbox, with its own event id."""
        async with self._db.transaction() as conn:
            await _republish(conn, [payload])

    # --- redrive ---------------------------------------------------------------------

    async def redrive_failed(self, event_ids: list[uuid.UUID] | None) -> int:
        """Reset the re-drivable failed events (all when None) to ``received`` and publish
        them again, in one transaction; returns how many."""
        async with self._db.transaction() as conn:
            rows = await conn.fetch(queries.REDRIVABLE, event_ids)
            if rows:
                await conn.execute(queries.RESET_TO_RECEIVED, [r["event_id"] for r in rows])
            await _republish(conn, [r["payload"] for r in rows])
        return len(rows)

    # --- kyc approve -----------------------------------------------------------------

    async def tokenization_of_address(self, address: str) -> str | None:
        """The tokenization whose token or Distributor is at ``address``, if any."""
        found: str | None = await self._db.fetchval(queries.K_TOKENIZATION_OF_ADDRESS, address)
        return found

    async def approve(self, user_id: str, wallet_address: str | None) -> int:
        """Approve ``user_id`` (setting the wallet when given) and publish its parked
        events again, in one transaction under the consumer's KYC lock; returns how many.
        Refused, with nothing written, when the user has no wallet."""
        async with self._db.transaction() as conn:
            await conn.execute(queries.LOCK_USER_KYC, user_id)
            wallet = await conn.fetchval(queries.APPROVE_USER, user_id, wallet_address)
            if wallet is None:
                raise InvalidInput(f"user {user_id} has no wallet address: pass --wallet")
            parked = await conn.fetch(queries.PARKED_OF_USER, user_id)
            await _republish(conn, [r["payload"] for r in parked])
        return len(parked)

    # --- dlq redrive -----------------------------------------------------------------

    async def stored_dead_letter(
        self, topic: str, partition: int, offset: int
    ) -> asyncpg.Record | None:
        """The original record kept for a dead letter too large for the DLQ topic."""
        return await self._db.fetchrow(queries.STORED_DEAD_LETTER, topic, partition, offset)


async def _republish(conn: db.Connection, payloads: Iterable[str]) -> None:
    for payload in payloads:
        await write_outbox_row(conn, PaymentConfirmedV1.model_validate_json(payload))
