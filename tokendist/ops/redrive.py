"""``tokendist redrive``: retry distributions that failed before anything was signed
(distributor out of tokens, a revert found by simulation, a wallet mismatch fixed since).

The reset and the re-published events commit together; the consumer then processes each
event again from ``received``. Nothing signed is ever re-driven: the chain's once-only
payment id would refuse it anyway, but a human should look at those first.
"""

from __future__ import annotations

import uuid

from tokendist.consumer import queries
from tokendist.core import db
from tokendist.outbox.enqueue import write_outbox_row
from tokendist.schemas import PaymentConfirmedV1


async def redrive_failed(conn: db.Connection, event_ids: list[uuid.UUID] | None) -> int:
    """Re-drive the given failed events (all re-drivable ones when None); returns count."""
    async with conn.transaction():
        rows = await conn.fetch(queries.REDRIVABLE, event_ids)
        if rows:
            await conn.execute(queries.RESET_TO_RECEIVED, [r["event_id"] for r in rows])
        for row in rows:
            await write_outbox_row(conn, PaymentConfirmedV1.model_validate_json(row["payload"]))
    return len(rows)
