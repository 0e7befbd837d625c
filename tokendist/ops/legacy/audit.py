"""``tokendist legacy audit``: what the old system sold, what it paid on-chain and what its
database says, per investor and per tokenization (the rule is ``findings``'s).

Read-only everywhere: the old database through a read-only session, the chain through
logs. The old database counts tokens in whole tokens (``tokens_requested``, ``balance``)
and money in naira (``amount_ngn``); the audit converts both exactly, with the token's
own ``decimals()``, and refuses a value that is not a whole number of base units (or of
kobo) rather than round it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import asyncpg
from eth_utils.address import is_hex_address, to_checksum_address

from tokendist.core.errors import InvalidInput
from tokendist.ops.legacy.chain import TransferReader
from tokendist.ops.legacy.findings import Investment, Investor, classify
from tokendist.ops.legacy.report import Audit
from tokendist.ops.legacy.repository import OldDatabase

KYC_APPROVED = frozenset({"approved", "verified"})
KOBO_PER_NAIRA = 100


@dataclass(frozen=True, slots=True)
class Request:
    tokens: dict[str, str]  # tokenization id -> the property token's address
    old_wallets: list[str]
    from_block: int
    to_block: int | None  # None: the head when the audit starts


def units(text: str | None, scale: int, what: str) -> int:
    """``text`` (a decimal) times ``scale`` as an exact non-negative integer."""
    try:
        value = Decimal(text or "0") * scale
    except InvalidOperation:
        raise InvalidInput(f"legacy database: {what} is {text!r}, not a number") from None
    if value < 0 or value != value.to_integral_value():
        raise InvalidInput(f"legacy database: {what} is {text}, not a whole number of units")
    return int(value)


async def audit(old: OldDatabase, chain: TransferReader, request: Request) -> Audit:
    """The old database first (a wrong one is refused before the chain is asked), then
    every transfer up to ``to_block``, then the rule."""
    ids = sorted(request.tokens)
    investments, holdings = await old.investments(ids), await old.holdings(ids)
    investors = _investors(await old.profiles(), await old.event_wallets())
    head = await chain.head()
    to_block = head if request.to_block is None else request.to_block
    if not request.from_block <= to_block <= head:
        raise InvalidInput(
            f"blocks {request.from_block}-{to_block} are not within the chain (head {head})"
        )
    tokens: dict[str, tuple[str, int]] = {}
    transfers = []
    for tokenization_id, address in sorted(request.tokens.items()):
        tokens[tokenization_id] = (address, await chain.decimals(address))
        transfers += await chain.transfers(
            tokenization_id, address, request.old_wallets, request.from_block, to_block
        )
    # Moves between the old wallets themselves (a treasury topping one up) pay no one.
    ours = {w.lower() for w in request.old_wallets}
    transfers = [t for t in transfers if t.recipient not in ours]
    scale = {t: 10**decimals for t, (_, decimals) in tokens.items()}
    rows = classify(
        _investments(investments, scale),
        investors,
        {
            (r["user_id"], r["tokenization_id"]): units(
                r["balance"], scale[r["tokenization_id"]], f"holding of {r['user_id']}"
            )
            for r in holdings
        },
        transfers,
    )
    return Audit.create(
        chain_id=await chain.chain_id(),
        from_block=request.from_block,
        to_block=to_block,
        old_wallets=request.old_wallets,
        tokens=tokens,
        rows=rows,
    )


def _investments(records: Iterable[asyncpg.Record], scale: dict[str, int]) -> list[Investment]:
    return [
        Investment(
            id=r["id"],
            user_id=r["user_id"],
            tokenization_id=r["tokenization_id"],
            tokens=units(r["tokens"], scale[r["tokenization_id"]], f"investment {r['id']}"),
            amount_minor=units(r["amount"], KOBO_PER_NAIRA, f"amount_ngn of {r['id']}"),
            status=r["status"] or "",
        )
        for r in records
    ]


def _wallet(text: str | None) -> str | None:
    return str(to_checksum_address(text)) if text and is_hex_address(text) else None


def _investors(
    profiles: Iterable[asyncpg.Record], event_wallets: Iterable[asyncpg.Record]
) -> list[Investor]:
    """Every investor the old system knew, with each wallet it may have paid them at."""
    known: dict[str, set[str]] = defaultdict(set)
    for r in event_wallets:
        if (wallet := _wallet(r["wallet"])) is not None:
            known[r["user_id"]].add(wallet.lower())
    found = {}
    for r in profiles:
        wallet = _wallet(r["wallet"])
        if wallet is not None:
            known[r["user_id"]].add(wallet.lower())
        found[r["user_id"]] = Investor(
            user_id=r["user_id"],
            wallet=wallet,
            kyc_approved=(r["kyc_status"] or "").lower() in KYC_APPROVED,
            known_wallets=frozenset(known[r["user_id"]]),
        )
    for user_id, wallets in known.items():
        found.setdefault(user_id, Investor(user_id, None, False, frozenset(wallets)))
    return list(found.values())
