"""The checkout contract: how an investment is born.

Before the investor pays, the platform records a ``pending`` investment carrying what
the payment must be (amount and currency) and the provider reference it will arrive
under. The webhook receiver only confirms what exists: a payment under a reference no
pending investment carries, or for another amount, is flagged and never distributed.

``create_pending_investment`` is idempotent: the same request again answers
``created=False``; the same investment id or reference with different terms is refused.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tokendist.core import db
from tokendist.core.errors import CheckoutRefused
from tokendist.schemas.events import MAX_AMOUNT_MINOR, Identifier, TokenUnits
from tokendist.webhook import queries
from tokendist.webhook.paystack import PROVIDER
from tokendist.webhook.providers.base import CURRENCY, NAME, REFERENCE


class PendingInvestment(BaseModel):
    """What the platform sends (``POST /investments`` takes the same fields as JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    investment_id: Identifier
    user_id: Identifier
    tokenization_id: Identifier
    tokens: TokenUnits  # base units, as a decimal string on the wire
    amount_minor: Annotated[int, Field(gt=0, le=MAX_AMOUNT_MINOR, strict=True)]
    currency: Annotated[str, Field(pattern=f"^{CURRENCY.pattern}$")]
    provider_reference: Annotated[str, Field(pattern=f"^{REFERENCE.pattern}$")]
    provider: Annotated[str, Field(pattern=f"^{NAME.pattern}$")] = PROVIDER


async def create_pending_investment(conn: db.Connection, order: PendingInvestment) -> bool:
    """Record ``order`` as a pending investment; False if this very order already exists.

    Raises ``CheckoutRefused``: ``unknown_tokenization``, or ``conflict`` when the
    investment id or the provider reference is already used with other terms. A refusal
    is raised inside the transaction: the user row it may have added is rolled back too.
    """
    async with conn.transaction():
        if not await conn.fetchval(queries.TOKENIZATION_EXISTS, order.tokenization_id):
            raise CheckoutRefused("unknown_tokenization", order.tokenization_id)
        await conn.execute(queries.ENSURE_USER, order.user_id)
        inserted = await conn.fetchval(
            queries.INSERT_PENDING_INVESTMENT,
            order.investment_id,
            order.user_id,
            order.tokenization_id,
            order.provider,
            order.provider_reference,
            order.amount_minor,
            order.currency,
            order.tokens,
        )
        if inserted is not None:
            return True
        rows = await conn.fetch(
            queries.INVESTMENT_BY_ID_OR_REFERENCE,
            order.investment_id,
            order.provider,
            order.provider_reference,
        )
        if len(rows) == 1 and _same_terms(order, dict(rows[0])):
            return False
        raise CheckoutRefused(
            "conflict", "the investment id or provider reference is taken by other terms"
        )


def _same_terms(order: PendingInvestment, row: dict[str, Any]) -> bool:
    return (
        row["id"] == order.investment_id
        and row["user_id"] == order.user_id
        and row["tokenization_id"] == order.tokenization_id
        and row["provider"] == order.provider
        and row["provider_reference"] == order.provider_reference
        and row["amount_minor"] == order.amount_minor
        and row["currency"] == order.currency
        and int(row["tokens_requested"]) == order.tokens
    )
