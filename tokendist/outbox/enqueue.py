"""``enqueue``: record a confirmed payment in the caller's transaction.

The payment service calls it inside the same transaction that marks the payment paid, so
either both commit or neither does. The dedupe table makes webhook retries harmless: the
same (provider, provider_reference) enqueued any number of times yields one event.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from tokendist.core import db
from tokendist.core.errors import NotInTransaction
from tokendist.outbox import queries
from tokendist.schemas import PaymentConfirmedV1

AGGREGATE_TYPE = "user"


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    event_id: uuid.UUID
    created: bool  # False: this payment was already confirmed; nothing new was written


def event_headers(event: PaymentConfirmedV1) -> dict[str, str]:
    return {
        "event_id": str(event.event_id),
        "event_type": event.event_type,
        "schema_version": str(event.schema_version),
    }


async def write_outbox_row(conn: db.Connection, event: PaymentConfirmedV1) -> uuid.UUID:
    """Insert one outbox row for ``event`` (a fresh row id; the event id travels in it)."""
    row_id = uuid.uuid4()
    await conn.execute(
        queries.INSERT_OUTBOX,
        row_id,
        AGGREGATE_TYPE,
        event.data.user_id,
        event.event_type,
        event.model_dump_json(),
        json.dumps(event_headers(event), sort_keys=True),
    )
    return row_id


async def enqueue(conn: db.Connection, event: PaymentConfirmedV1) -> EnqueueResult:
    """Write ``event`` to the outbox unless this payment was confirmed before.

    A second confirmation of the same investment under another provider reference is
    also folded into the first event (the investment is paid for once); the payment
    service sees ``created=False`` and handles the surplus payment (a refund).

    Must run inside the caller's open transaction: outside one, the outbox row could
    commit while the payment does not (or the reverse), which is the bug this API exists
    to prevent.
    """
    if not conn.is_in_transaction():
        raise NotInTransaction(
            "outbox.enqueue must run inside the caller's transaction "
            "(async with conn.transaction(): ...)"
        )
    data = event.data
    inserted = await conn.fetchval(
        queries.INSERT_CONFIRMATION,
        event.event_id,
        data.provider,
        data.provider_reference,
        data.investment_id,
        data.user_id,
        data.tokenization_id,
        data.tokens,
        event.model_dump_json(),
    )
    if inserted is None:
        existing = await conn.fetchrow(
            queries.EXISTING_CONFIRMATION,
            data.provider,
            data.provider_reference,
            data.investment_id,
        )
        assert existing is not None  # the conflict that stopped the insert is visible to us
        return EnqueueResult(event_id=existing["event_id"], created=False)
    await write_outbox_row(conn, event)
    return EnqueueResult(event_id=event.event_id, created=True)
