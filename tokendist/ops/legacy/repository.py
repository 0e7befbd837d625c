"""``tokendist legacy``'s PostgreSQL side: every statement of ``legacy.queries`` runs here.

``OldDatabase`` reads the old system in a read-only session (the server refuses any
write on it, whatever a statement says). ``Adoptions`` writes in tokendist's database
through ``db.Database``, so an outage reaches the command as ``DatabaseUnavailable``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from tokendist.core import db
from tokendist.core.errors import DatabaseUnavailable, InvalidInput
from tokendist.ops.legacy import queries
from tokendist.outbox import enqueue
from tokendist.schemas import PaymentConfirmedV1

READ_ONLY = {"default_transaction_read_only": "on", "application_name": "tokendist-legacy"}


class OldDatabase:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._db = db.Database(conn)

    @classmethod
    @asynccontextmanager
    async def connect(cls, dsn: str) -> AsyncIterator[OldDatabase]:
        try:
            conn = await db.guarded(
                lambda: asyncpg.connect(dsn, timeout=10, server_settings=READ_ONLY)
            )
        except DatabaseUnavailable as exc:
            raise DatabaseUnavailable(f"legacy database unreachable: {exc}") from None
        except (asyncpg.PostgresError, asyncpg.ClientConfigurationError, ValueError) as exc:
            # The server answered (unknown database, refused credentials) or the string is
            # no DSN: asking again will not help. Never echo the DSN: it holds a password.
            raise InvalidInput(f"legacy database refused: {type(exc).__name__}") from None
        try:
            yield cls(conn)
        finally:
            await conn.close()

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        try:
            return await self._db.fetch(sql, *args)
        except asyncpg.PostgresError as exc:
            raise InvalidInput(
                f"legacy database: {exc} (see tokendist/ops/legacy/queries.py for the "
                "tables and columns the audit reads)"
            ) from None

    async def investments(self, tokenization_ids: list[str]) -> list[asyncpg.Record]:
        return await self._fetch(queries.L_INVESTMENTS, tokenization_ids)

    async def profiles(self) -> list[asyncpg.Record]:
        return await self._fetch(queries.L_PROFILES)

    async def event_wallets(self) -> list[asyncpg.Record]:
        return await self._fetch(queries.L_EVENT_WALLETS)

    async def holdings(self, tokenization_ids: list[str]) -> list[asyncpg.Record]:
        return await self._fetch(queries.L_HOLDINGS, tokenization_ids)


@dataclass(frozen=True, slots=True)
class Adoption:
    user_id: str
    tokenization_id: str
    audit_id: uuid.UUID
    finding: str
    wallet: str
    kyc_status: str
    bought: int
    chain_paid: int
    legacy_db_holding: int
    topup: int
    property_id: str
    reason: str


class Adoptions:
    def __init__(self, target: asyncpg.Pool | db.Connection) -> None:
        self._db = db.Database(target)

    async def tokenizations(self) -> dict[str, asyncpg.Record]:
        return {r["id"]: r for r in await self._db.fetch(queries.TOKENIZATIONS)}

    async def adopted(self) -> dict[tuple[str, str], uuid.UUID]:
        """(user, tokenization) -> the audit that adopted it."""
        rows = await self._db.fetch(queries.ADOPTIONS)
        return {(r["user_id"], r["tokenization_id"]): r["audit_id"] for r in rows}

    async def wallet_of(self, user_id: str) -> str | None:
        row = await self._db.fetchrow(queries.USER, user_id)
        return None if row is None else row["wallet_address"]

    async def adopt(self, a: Adoption, topup: PaymentConfirmedV1 | None) -> bool:
        """In ONE transaction: the adoption row, the opening balance added to the holding
        with its ledger pair, and the top-up's outbox event. False (nothing written) when
        this investor was adopted before, by any audit."""
        async with self._db.transaction() as conn:
            await conn.execute(queries.INSERT_USER, a.user_id, a.kyc_status, a.wallet)
            inserted = await conn.fetchval(
                queries.INSERT_ADOPTION,
                a.user_id,
                a.tokenization_id,
                a.audit_id,
                a.finding,
                a.wallet,
                a.bought,
                a.chain_paid,
                a.legacy_db_holding,
                a.topup,
                None if topup is None else topup.event_id,
            )
            if inserted is None:
                return False
            if a.chain_paid:
                await conn.execute(
                    queries.CREDIT_HOLDING,
                    a.user_id,
                    a.tokenization_id,
                    a.property_id,
                    a.chain_paid,
                )
                await conn.execute(
                    queries.LEDGER_PAIR, a.user_id, a.tokenization_id, a.chain_paid, a.reason
                )
            if topup is not None:
                await enqueue(conn, topup)
        return True
