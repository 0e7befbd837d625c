"""KYC approval releases parked distributions by re-publishing their events.

The approval and the outbox rows commit together, so an approval can never be recorded
without its events being re-driven (or the reverse). The consumer finds each event's
row in ``awaiting_kyc`` and carries on from there.
"""

from __future__ import annotations

from consumer import queries
from outbox.enqueue import write_outbox_row
from schemas import PaymentConfirmedV1
from tokendist import db
from tokendist.errors import TokendistError


async def approve(conn: db.Connection, user_id: str, wallet_address: str | None) -> int:
    """Approve ``user_id`` (optionally setting the wallet); returns events re-driven."""
    async with conn.transaction():
        await conn.execute(queries.LOCK_USER_KYC, user_id)
        wallet = await conn.fetchval(queries.APPROVE_USER, user_id, wallet_address)
        if wallet is None:
            raise TokendistError(f"user {user_id} has no wallet address: pass --wallet")
        parked = await conn.fetch(queries.PARKED_OF_USER, user_id)
        for row in parked:
            await write_outbox_row(conn, PaymentConfirmedV1.model_validate_json(row["payload"]))
    return len(parked)
