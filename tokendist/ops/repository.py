"""The operator tools' PostgreSQL side: every statement of ``tokendist.ops.queries`` runs
here, through ``db.Database``, so an outage reaches a tool as ``DatabaseUnavailable``.

Built over what the tool was handed: one connection (a command's), or a pool (reconcile's,
shared with the consumer's ``Repository``, whose guarded transitions it reuses).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime

import asyncpg

from tokendist.consumer.chain import Signed
from tokendist.consumer.repository import Distribution
from tokendist.core import db
from tokendist.core.errors import InvalidInput, KeyRejected
from tokendist.ops import queries
from tokendist.outbox.enqueue import write_outbox_row
from tokendist.schemas import PaymentConfirmedV1

CHAIN_CHECK_LOCK = "tokendist-chain-check"


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
        suite: Mapping[str, str | int] | None = None,
    ) -> bool:
        """Record a deployed tokenization, with its ERC-3643 ``suite`` (the columns of
        ``erc3643_suites`` but the id) when it is one; False when its id was recorded
        first."""
        try:
            async with self._db.transaction() as conn:
                await conn.execute(
                    queries.RECORD_TOKENIZATION,
                    tokenization_id,
                    property_id,
                    chain_id,
                    token_address,
                    decimals,
                    distributor_address,
                )
                if suite is not None:
                    await conn.execute(
                        queries.RECORD_SUITE,
                        tokenization_id,
                        *(suite[c] for c in queries.SUITE_COLUMNS),
                    )
        except asyncpg.UniqueViolationError:
            return False
        return True

    async def erc3643_platform(self, chain_id: int) -> asyncpg.Record | None:
        """The ONCHAINID factory and claim issuer the chain's suites share, if any."""
        return await self._db.fetchrow(queries.ERC3643_PLATFORM, chain_id)

    async def erc3643_suites(self) -> list[asyncpg.Record]:
        """Every ERC-3643 tokenization's suite (with ``token_address``)."""
        return list(await self._db.fetch(queries.ERC3643_SUITES))

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

    async def parked_reasons(self) -> list[asyncpg.Record]:
        return await self._db.fetch(queries.S_PARKED_REASONS)

    async def parked_users(self) -> int:
        count: int = await self._db.fetchval(queries.S_PARKED_USERS)
        return count

    async def mined_not_final(self) -> tuple[int, float]:
        """(batches mined but not final, seconds the oldest has waited)."""
        row = await self._db.fetchrow(queries.S_MINED_NOT_FINAL)
        assert row is not None  # an aggregate always answers one row
        return int(row["mined"]), float(row["oldest_s"])

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

    # --- chain-check, and reconcile's repair -----------------------------------------

    def chain_check_turn(self) -> AbstractAsyncContextManager[bool]:
        """Whether this process may check now: one checker at a time, whatever runs (a
        session lock, freed if the checker dies)."""
        return self._db.try_lock(CHAIN_CHECK_LOCK)

    async def checkpoint(self, chain_id: int) -> tuple[int | None, datetime | None, datetime]:
        """(head of the last check, when it began, the database's clock now)."""
        row = await self._db.fetchrow(queries.C_CHECKPOINT, chain_id)
        now: datetime = await self._db.fetchval(queries.C_NOW)
        if row is None:
            return None, None, now
        return int(row["checked_block"]), row["started_at"], now

    async def check_candidates(
        self, chain_id: int, from_block: int, credited_since: datetime | None
    ) -> list[asyncpg.Record]:
        return list(
            await self._db.fetch(queries.C_CANDIDATES, chain_id, from_block, credited_since)
        )

    async def record_check(
        self,
        chain_id: int,
        head: int,
        started_at: datetime,
        missing: list[uuid.UUID],
        found: list[uuid.UUID],
    ) -> list[uuid.UUID]:
        """Remember what is missing (returns those newly so), forget what is back, and
        move the checkpoint, in one transaction."""
        async with self._db.transaction() as conn:
            new = await conn.fetch(queries.C_MARK_MISSING, missing, chain_id, head)
            await conn.execute(queries.C_MARK_FOUND, found)
            await conn.execute(queries.C_SAVE_CHECKPOINT, chain_id, head, started_at)
        return [r["event_id"] for r in new]

    async def batches_of(self, batch_ids: list[int]) -> list[asyncpg.Record]:
        return list(await self._db.fetch(queries.C_BATCHES_OF, batch_ids))

    async def sender_attempts(
        self, chain_id: int, sender: str, first: int, last: int
    ) -> list[asyncpg.Record]:
        """Each nonce of ``sender`` from ``first`` to ``last`` that a batch holds, with the
        attempt to send again."""
        return list(await self._db.fetch(queries.C_SENDER_ATTEMPTS, chain_id, sender, first, last))

    async def resigned_in_flight(self) -> list[asyncpg.Record]:
        return list(await self._db.fetch(queries.C_RESIGNED_IN_FLIGHT))

    async def resign(
        self,
        batch_id: int,
        original: int,
        *,
        chain_id: int,
        sender: str,
        chain_pending: int,
        sign: Callable[[int, str, bytes, int], Awaitable[Signed]],
    ) -> tuple[int, Signed]:
        """``batch_id``'s calldata signed again by ``sender`` under its next nonce, stored
        as a new batch re-signing ``original`` with its attempt, as the consumer stores a
        batch: the nonce is consumed only together with the transaction that uses it.
        ``sign(nonce, distributor, calldata, gas)``; KeyRejected if the key may not sign."""
        async with self._db.transaction() as conn:
            state = await conn.fetchval(queries.KEY_STATE_FOR_SHARE, chain_id, sender)
            if state != "active":
                raise KeyRejected(f"key {sender} is {state or 'not registered'}")
            await conn.fetchval(queries.SYNC_NONCE, chain_id, sender, chain_pending)
            nonce = await conn.fetchval(queries.LOCK_NONCE, chain_id, sender)
            row = await conn.fetchrow(queries.C_BATCH_TO_SIGN, batch_id)
            assert row is not None  # a foreign key of the distributions that name it
            signed = await sign(
                nonce, row["distributor_address"], bytes(row["calldata"]), row["gas_limit"]
            )
            new_id = await conn.fetchval(
                queries.C_INSERT_RESIGNED, batch_id, sender, nonce, original
            )
            await conn.execute(
                queries.INSERT_BATCH_TX, signed.tx_hash, new_id, chain_id, sender, signed.nonce,
                signed.raw, signed.gas, signed.max_fee_per_gas, signed.priority_fee,
            )  # fmt: skip
            await conn.execute(queries.ADVANCE_NONCE, chain_id, sender, nonce)
        return int(new_id), signed

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

    async def approve_registered(self, user_id: str, wallet: str, identity: str) -> int:
        """``approve`` and the on-chain identity marked registered, in one transaction."""
        async with self._db.transaction() as conn:
            await conn.execute(queries.LOCK_USER_KYC, user_id)
            await conn.fetchval(queries.APPROVE_USER, user_id, wallet)
            await conn.execute(queries.K_MARK_REGISTERED, user_id, identity)
            parked = await conn.fetch(queries.PARKED_OF_USER, user_id)
            await _republish(conn, [r["payload"] for r in parked])
        return len(parked)

    # --- kyc on-chain (ERC-3643) -----------------------------------------------------

    async def begin_registration(
        self, user_id: str, wallet: str | None, country: int | None
    ) -> tuple[str, int, str | None]:
        """Record the intent to register ``user_id`` on-chain; returns (wallet, country,
        the wallet registered before if another). Wallet and country default to those
        recorded; refused, with nothing written, when there are none."""
        async with self._db.transaction() as conn:
            await conn.execute(queries.LOCK_USER_KYC, user_id)
            known = await conn.fetchrow(queries.K_ONCHAIN_IDENTITY, user_id)
            if wallet is None and known is not None:
                wallet = known["wallet_address"]
            wallet = wallet or await conn.fetchval(queries.K_USER_WALLET, user_id)
            if wallet is None:
                raise InvalidInput(f"user {user_id} has no wallet address: pass --wallet")
            if country is None:
                if known is None:
                    raise InvalidInput(
                        f"user {user_id}: an ERC-3643 identity needs a country: pass --country"
                    )
                country = int(known["country"])
            # The users row must exist before its identity row references it.
            await conn.execute(queries.ENSURE_USER, user_id)
            previous = await conn.fetchval(queries.K_BEGIN_REGISTRATION, user_id, wallet, country)
        return wallet, country, previous

    async def begin_removal(self, user_id: str) -> str | None:
        """Revoke ``user_id`` and record the intent to remove its identity from the
        registries, in one transaction; returns its wallet when it has an identity to
        remove. Refused (nothing written) for an unknown user."""
        async with self._db.transaction() as conn:
            await conn.execute(queries.LOCK_USER_KYC, user_id)
            if await conn.fetchval(queries.REVOKE_USER, user_id) is None:
                raise InvalidInput(f"user {user_id} is not known")
            wallet: str | None = await conn.fetchval(queries.K_BEGIN_REMOVAL, user_id)
        return wallet

    async def mark_removed(self, user_id: str) -> None:
        await self._db.execute(queries.K_MARK_REMOVED_IDENTITY, user_id)

    async def unfinished_identities(self, older_than_s: float) -> list[asyncpg.Record]:
        """Identities whose registration or removal a crash interrupted, untouched for
        ``older_than_s``."""
        return list(await self._db.fetch(queries.K_UNFINISHED_IDENTITIES, older_than_s))

    # --- dlq redrive -----------------------------------------------------------------

    async def stored_dead_letter(
        self, topic: str, partition: int, offset: int
    ) -> asyncpg.Record | None:
        """The original record kept for a dead letter too large for the DLQ topic."""
        return await self._db.fetchrow(queries.STORED_DEAD_LETTER, topic, partition, offset)


async def _republish(conn: db.Connection, payloads: Iterable[str]) -> None:
    for payload in payloads:
        await write_outbox_row(conn, PaymentConfirmedV1.model_validate_json(payload))
