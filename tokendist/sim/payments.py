"""A stand-in for the upstream payment service (used by the demo, tests and benchmarks).

It does what a real one must: in ONE transaction, record the payment as confirmed and
call ``outbox.enqueue``. A webhook delivered again runs the same transaction again and
enqueue's dedupe turns it into a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from tokendist.core import db
from tokendist.outbox import EnqueueResult, enqueue
from tokendist.schemas import PaymentConfirmedV1

UPSERT_USER = """
INSERT INTO users (id, kyc_status, wallet_address) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET kyc_status = EXCLUDED.kyc_status,
    wallet_address = EXCLUDED.wallet_address, updated_at = now()
"""

RECORD_INVESTMENT = """
INSERT INTO investments (id, user_id, tokenization_id, provider, provider_reference,
                         amount_minor, currency, tokens_requested, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'confirmed')
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Payment:
    user_id: str
    investment_id: str
    tokenization_id: str
    property_id: str
    tokens: int
    amount_minor: int
    reference: str
    wallet_address: str | None
    currency: str = "NGN"
    provider: str = "paystack"

    def event(self) -> PaymentConfirmedV1:
        return PaymentConfirmedV1.new(
            occurred_at=datetime.now(UTC),
            user_id=self.user_id,
            investment_id=self.investment_id,
            tokenization_id=self.tokenization_id,
            property_id=self.property_id,
            tokens=self.tokens,
            amount_minor=self.amount_minor,
            currency=self.currency,
            wallet_address=self.wallet_address,
            provider=self.provider,
            provider_reference=self.reference,
        )


async def register_user(
    conn: db.Connection, user_id: str, wallet: str | None, kyc_status: str = "approved"
) -> None:
    await conn.execute(UPSERT_USER, user_id, kyc_status, wallet)


async def confirm(conn: db.Connection, payment: Payment) -> EnqueueResult:
    """The payment service's webhook handler: payment row and outbox row, atomically."""
    async with conn.transaction():
        await conn.execute(
            RECORD_INVESTMENT,
            payment.investment_id,
            payment.user_id,
            payment.tokenization_id,
            payment.provider,
            payment.reference,
            payment.amount_minor,
            payment.currency,
            payment.tokens,
        )
        return await enqueue(conn, payment.event())
