"""KYC approval releases parked distributions by re-publishing their events.

The approval and the outbox rows commit together, so an approval can never be recorded
without its events being re-driven (or the reverse). The consumer finds each event's
row in ``awaiting_kyc`` and carries on from there.

A wallet is refused when tokens sent to it would not reach an investor: the zero address
(the CLI refuses it), a token or Distributor of any tokenization (a Distributor paying
itself would spend the payment's once-only id on a transfer to itself), and this
system's own operator or deployer accounts.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokendist.consumer import queries
from tokendist.core import db
from tokendist.core.errors import InvalidInput
from tokendist.outbox.enqueue import write_outbox_row
from tokendist.schemas import PaymentConfirmedV1


async def approve(
    conn: db.Connection,
    user_id: str,
    wallet_address: str | None,
    *,
    not_wallets: Iterable[str] = (),
) -> int:
    """Approve ``user_id`` (optionally setting the wallet); returns events re-driven.
    ``not_wallets``: the system's own accounts, refused as an investor's wallet."""
    if wallet_address is not None:
        await _check_wallet(conn, wallet_address, not_wallets)
    async with conn.transaction():
        await conn.execute(queries.LOCK_USER_KYC, user_id)
        wallet = await conn.fetchval(queries.APPROVE_USER, user_id, wallet_address)
        if wallet is None:
            raise InvalidInput(f"user {user_id} has no wallet address: pass --wallet")
        parked = await conn.fetch(queries.PARKED_OF_USER, user_id)
        for row in parked:
            await write_outbox_row(conn, PaymentConfirmedV1.model_validate_json(row["payload"]))
    return len(parked)


async def _check_wallet(conn: db.Connection, wallet: str, not_wallets: Iterable[str]) -> None:
    if wallet.lower() in {a.lower() for a in not_wallets}:
        raise InvalidInput(f"{wallet} is one of this system's own accounts, not a wallet")
    tokenization = await conn.fetchval(queries.K_TOKENIZATION_OF_ADDRESS, wallet)
    if tokenization is not None:
        raise InvalidInput(
            f"{wallet} is a contract of tokenization {tokenization} (token or Distributor)"
        )
