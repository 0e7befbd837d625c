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

from tokendist.core import db
from tokendist.core.errors import InvalidInput
from tokendist.ops.repository import ToolRepository


async def approve(
    conn: db.Connection,
    user_id: str,
    wallet_address: str | None,
    *,
    not_wallets: Iterable[str] = (),
) -> int:
    """Approve ``user_id`` (optionally setting the wallet); returns events re-driven.
    ``not_wallets``: the system's own accounts, refused as an investor's wallet."""
    ops = ToolRepository(conn)
    if wallet_address is not None:
        await _check_wallet(ops, wallet_address, not_wallets)
    return await ops.approve(user_id, wallet_address)


async def _check_wallet(ops: ToolRepository, wallet: str, not_wallets: Iterable[str]) -> None:
    if wallet.lower() in {a.lower() for a in not_wallets}:
        raise InvalidInput(f"{wallet} is one of this system's own accounts, not a wallet")
    tokenization = await ops.tokenization_of_address(wallet)
    if tokenization is not None:
        raise InvalidInput(
            f"{wallet} is a contract of tokenization {tokenization} (token or Distributor)"
        )
