"""What a verified notification does to the database, whichever provider sent it.

The receiver knows providers only through ``PaymentProvider`` (``webhook/providers``):
every row it writes and every event it enqueues carries the provider's ``name``, so the
same reference at two providers is two payments.

A charge runs ONE transaction: lock the pending investment, record the payment
under its unique reference, and, when it matches, confirm the investment and
``outbox.enqueue`` the ``PaymentConfirmed`` event. Either all of it commits or none of it
does, so a failure answers 5xx, the provider retries, and the retry starts clean. A
re-delivery, sequential or concurrent, loses the race on the unique reference and
changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import asyncpg
import structlog
from eth_utils.address import to_checksum_address

from tokendist.core import db
from tokendist.outbox import enqueue
from tokendist.schemas import PaymentConfirmedV1
from tokendist.webhook import queries
from tokendist.webhook.providers.base import (
    Adjustment,
    AdjustmentKind,
    Charge,
    Domain,
    Notice,
    PaymentProvider,
    Verification,
)

log = structlog.get_logger("tokendist.webhook")


class Outcome(StrEnum):
    CONFIRMED = "confirmed"  # payment recorded, investment confirmed, event enqueued
    DUPLICATE = "duplicate"  # this notification was handled before: nothing changed
    FLAGGED = "flagged"  # payment recorded for a human; nothing will be distributed
    ADJUSTMENT = "adjustment_recorded"  # refund or dispute recorded, alert raised
    IGNORED = "ignored"  # an event this system does not act on


class FlagReason(StrEnum):
    UNKNOWN_REFERENCE = "unknown_reference"
    DOMAIN_MISMATCH = "domain_mismatch"
    INVESTMENT_NOT_PENDING = "investment_not_pending"
    CURRENCY_MISMATCH = "currency_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"
    NOT_VERIFIED = "not_verified"


@dataclass(frozen=True, slots=True)
class Expected:
    """The pending investment's terms, as the platform recorded them at checkout."""

    status: str
    amount_minor: int
    currency: str


def assess(
    charge: Charge, expected: Expected | None, mode: Domain, verification: Verification | None
) -> FlagReason | None:
    """Why this payment must not be distributed, or None when it may (first reason wins)."""
    if expected is None:
        return FlagReason.UNKNOWN_REFERENCE
    unverified = verification is not None and (
        verification.status != "success"
        or verification.amount_minor != charge.amount_minor
        or verification.currency != charge.currency
    )
    checks = (
        (charge.domain != mode, FlagReason.DOMAIN_MISMATCH),
        (expected.status != "pending", FlagReason.INVESTMENT_NOT_PENDING),
        (charge.currency != expected.currency, FlagReason.CURRENCY_MISMATCH),
        (charge.amount_minor != expected.amount_minor, FlagReason.AMOUNT_MISMATCH),
        (unverified, FlagReason.NOT_VERIFIED),
    )
    return next((reason for failed, reason in checks if failed), None)


class Receiver:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._db = db.Database(pool)

    async def handle(self, provider: PaymentProvider, notice: Notice, body: bytes) -> Outcome:
        """Apply ``notice`` from ``provider``; raises ``DatabaseUnavailable`` /
        ``ProviderUnavailable``."""
        # Only the kept fields are stored; the raw bytes' hash identifies the delivery (and
        # lets anyone holding a copy of the body check it against the row).
        digest = hashlib.sha256(body).hexdigest()
        if isinstance(notice, Charge):
            return await self._charge(provider, notice, digest)
        if isinstance(notice, Adjustment):
            return await self._adjustment(provider.name, notice, digest)
        log.debug("webhook_event_ignored", provider=provider.name, webhook_event=notice.event)
        return Outcome.IGNORED

    async def _charge(self, provider: PaymentProvider, charge: Charge, digest: str) -> Outcome:
        # Outside the transaction: no row lock is held across the provider's latency.
        verification = await provider.confirm(charge.reference)
        outcome, flag = await self._record_charge(
            provider.name, provider.mode, charge, digest, verification
        )
        if flag is not None:
            log.warning(
                "payment_flagged",
                alert=True,
                reason=flag.value,
                provider=provider.name,
                reference=charge.reference,
                amount_minor=charge.amount_minor,
                currency=charge.currency,
                domain=charge.domain,
            )
        else:
            log.info(
                "payment_received",
                outcome=outcome.value,
                provider=provider.name,
                reference=charge.reference,
            )
        return outcome

    async def _record_charge(
        self,
        provider: str,
        mode: Domain,
        charge: Charge,
        digest: str,
        verification: Verification | None,
    ) -> tuple[Outcome, FlagReason | None]:
        async with self._db.transaction() as conn:
            row = await conn.fetchrow(queries.INVESTMENT_FOR_PAYMENT, provider, charge.reference)
            expected = (
                None
                if row is None
                else Expected(row["status"], row["amount_minor"], row["currency"])
            )
            flag = assess(charge, expected, mode, verification)
            payment_id = await conn.fetchval(
                queries.INSERT_PAYMENT,
                provider,
                charge.reference,
                None if row is None else row["id"],
                charge.domain,
                charge.amount_minor,
                charge.currency,
                charge.paid_at,
                "accepted" if flag is None else "flagged",
                None if flag is None else flag.value,
                charge.kept,
                digest,
            )
            if payment_id is None:
                return Outcome.DUPLICATE, None
            if flag is not None or row is None:
                return Outcome.FLAGGED, flag
            await conn.execute(queries.CONFIRM_INVESTMENT, row["id"])
            await enqueue(conn, _event(provider, charge, row))
            return Outcome.CONFIRMED, None

    async def _adjustment(self, provider: str, adj: Adjustment, digest: str) -> Outcome:
        async with self._db.transaction() as conn:
            payment = await conn.fetchrow(queries.PAYMENT_BY_REFERENCE, provider, adj.reference)
            inserted = await conn.fetchval(
                queries.INSERT_ADJUSTMENT,
                provider,
                adj.reference,
                None if payment is None else payment["id"],
                adj.kind.value,
                adj.event,
                adj.amount_minor,
                adj.kept,
                digest,
            )
        investment_status = None if payment is None else payment["investment_status"]
        if inserted is None:
            return Outcome.DUPLICATE
        log.warning(
            "refund_recorded" if adj.kind is AdjustmentKind.REFUND else "dispute_recorded",
            alert=True,
            provider=provider,
            webhook_event=adj.event,
            reference=adj.reference,
            amount_minor=adj.amount_minor,
            # tokens_distributed: the investor holds the tokens; an operator decides.
            investment_status=investment_status,
        )
        return Outcome.ADJUSTMENT


def _event(provider: str, charge: Charge, row: Any) -> PaymentConfirmedV1:
    wallet = row["wallet_address"]
    return PaymentConfirmedV1.new(
        occurred_at=charge.paid_at or datetime.now(UTC),
        user_id=row["user_id"],
        investment_id=row["id"],
        tokenization_id=row["tokenization_id"],
        property_id=row["property_id"],
        tokens=int(row["tokens_requested"]),
        amount_minor=charge.amount_minor,
        currency=charge.currency,
        wallet_address=None if wallet is None else to_checksum_address(wallet),
        provider=provider,
        provider_reference=charge.reference,
    )
