"""``tokendist redrive``: retry distributions that failed before anything was signed
(distributor out of tokens, a revert found by simulation, a wallet mismatch fixed since).

The reset and the re-published events commit together; the consumer then processes each
event again from ``received``. Nothing signed is ever re-driven: the chain's once-only
payment id would refuse it anyway, but a human should look at those first.
"""

from __future__ import annotations

import uuid

from tokendist.core import db
from tokendist.ops.repository import ToolRepository


async def redrive_failed(conn: db.Connection, event_ids: list[uuid.UUID] | None) -> int:
    """Re-drive the given failed events (all re-drivable ones when None); returns count."""
    return await ToolRepository(conn).redrive_failed(event_ids)
