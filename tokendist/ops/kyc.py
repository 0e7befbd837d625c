"""KYC approval releases parked distributions by re-publishing their events; under
ERC-3643 it also registers the investor's on-chain identity, and revocation removes it.

The approval and the outbox rows commit together, so an approval can never be recorded
without its events being re-driven (or the reverse). The consumer finds each event's
row in ``awaiting_kyc`` and carries on from there.

On-chain (when any tokenization is an ERC-3643 token), crash-safe in three steps:

1. PostgreSQL records the intent (``onchain_identities.state`` = ``registering``; the
   user stays pending, so nothing is paid yet);
2. the chain: the investor's ONCHAINID (created by the platform's factory, linked to the
   wallet), the platform's KYC claim on it, the wallet registered with the country in
   every suite's identity registry; each step checks before it acts;
3. PostgreSQL: approved, ``registered``, parked events re-driven, in one transaction.

A crash after 1 or 2 leaves ``registering``: running the same command again (or
``reconcile``, which finishes every such row) completes it without doing anything twice.
Revocation runs the other way round: ``rejected`` and ``removing`` first (the consumer
stops paying at once), then each registry's entry deleted, then ``removed``.

A wallet is refused when tokens sent to it would not reach an investor: the zero address
(the CLI refuses it), a token or Distributor of any tokenization (a Distributor paying
itself would spend the payment's once-only id on a transfer to itself), and this
system's own operator or deployer accounts.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from tokendist.core import db
from tokendist.core.errors import InvalidInput
from tokendist.ops.repository import ToolRepository
from tokendist.ops.trex import Platform, Trex


async def approve(
    conn: db.Connection,
    user_id: str,
    wallet_address: str | None,
    *,
    not_wallets: Iterable[str] = (),
    trex: Trex | None = None,
    country: int | None = None,
) -> int:
    """Approve ``user_id`` (optionally setting the wallet; ``country``, ISO 3166-1
    numeric, for its on-chain identity); returns events re-driven. ``not_wallets``: the
    system's own accounts, refused as an investor's wallet. ``trex``: the deployer's
    chain adapter, required once an ERC-3643 tokenization exists."""
    ops = ToolRepository(conn)
    if wallet_address is not None:
        await _check_wallet(ops, wallet_address, not_wallets)
    suites = await ops.erc3643_suites()
    if not suites:
        return await ops.approve(user_id, wallet_address)
    chain = _required(trex)
    wallet, country, previous = await ops.begin_registration(user_id, wallet_address, country)
    return await _register(
        ops, chain, suites, user_id, wallet=wallet, country=country, previous=previous
    )


async def _register(
    ops: ToolRepository,
    trex: Trex,
    suites: list[asyncpg.Record],
    user_id: str,
    *,
    wallet: str,
    country: int,
    previous: str | None,
) -> int:
    if previous is not None:  # the investor changed wallets: the old one goes first
        for suite in suites:
            await trex.ensure_removed(suite["identity_registry"], previous)
    identity = ""
    for suite in suites:
        platform = Platform(id_factory=suite["id_factory"], claim_issuer=suite["claim_issuer"])
        identity = await trex.ensure_identity(platform, wallet)
        await trex.ensure_kyc_claim(identity, platform.claim_issuer)
        await trex.ensure_registered(suite["identity_registry"], wallet, identity, country)
    return await ops.approve_registered(user_id, wallet, identity)


async def revoke(conn: db.Connection, user_id: str, *, trex: Trex | None = None) -> bool:
    """Revoke ``user_id``: no further payment is made to them, and their wallet leaves
    every ERC-3643 identity registry. True when there was an identity to remove."""
    ops = ToolRepository(conn)
    suites = await ops.erc3643_suites()
    chain = _required(trex) if suites else None
    wallet = await ops.begin_removal(user_id)
    if wallet is None:
        return False
    await _remove(ops, chain, suites, user_id, wallet)
    return True


async def _remove(
    ops: ToolRepository,
    trex: Trex | None,
    suites: list[asyncpg.Record],
    user_id: str,
    wallet: str,
) -> None:
    for suite in suites:
        await _required(trex).ensure_removed(suite["identity_registry"], wallet)
    await ops.mark_removed(user_id)


async def finish_unfinished(ops: ToolRepository, trex: Trex, *, older_than_s: float) -> int:
    """Complete every registration or removal a crash interrupted, untouched for
    ``older_than_s`` (``reconcile``); returns how many."""
    suites = await ops.erc3643_suites()
    rows = await ops.unfinished_identities(older_than_s)
    for row in rows:
        if row["state"] == "registering":
            wallet, country, previous = await ops.begin_registration(row["user_id"], None, None)
            await _register(
                ops, trex, suites, row["user_id"], wallet=wallet, country=country, previous=previous
            )
        elif (leaving := await ops.begin_removal(row["user_id"])) is not None:
            await _remove(ops, trex, suites, row["user_id"], leaving)
    return len(rows)


def _required(trex: Trex | None) -> Trex:
    if trex is None:
        raise InvalidInput(
            "an ERC-3643 tokenization exists: registering identities needs the deployer "
            "key (TOKENDIST_DEPLOYER_KEY)"
        )
    return trex


async def _check_wallet(ops: ToolRepository, wallet: str, not_wallets: Iterable[str]) -> None:
    if wallet.lower() in {a.lower() for a in not_wallets}:
        raise InvalidInput(f"{wallet} is one of this system's own accounts, not a wallet")
    tokenization = await ops.tokenization_of_address(wallet)
    if tokenization is not None:
        raise InvalidInput(
            f"{wallet} is a contract of tokenization {tokenization} (token or Distributor)"
        )
