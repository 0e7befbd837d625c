"""``tokendist legacy settle``: from an audit file an operator reviewed, take every
investor over, once.

Per investor and tokenization, in ONE transaction (``Adoptions.adopt``):

- the adoption row (unique per investor and tokenization: a second run, a rerun after a
  crash, or another audit of the same history finds it and writes nothing);
- the opening balance the chain proves the old wallets paid, ADDED to ``token_holdings``
  with a ledger pair (``legacy:<tokenization>`` → ``investor:<user>``) whose reason
  names the audit and what the old database said instead;
- for the never-paid and under-paid, one top-up of ``bought - paid`` as an outbox event
  with the id ``uuid5(investor, tokenization, audit)``: the normal pipeline pays it
  exactly once and credits it (again by addition).

Over-payments are listed, never moved: recovering tokens is a business and legal
decision. Ambiguous and unmatched rows are listed for a human. ``dry_run`` reads, plans
and prints; it writes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog
from eth_utils.address import to_checksum_address

from tokendist.core.errors import InvalidInput
from tokendist.core.failpoints import Failpoints
from tokendist.ops.legacy.findings import Finding, Row
from tokendist.ops.legacy.report import Audit
from tokendist.ops.legacy.repository import Adoption, Adoptions
from tokendist.schemas import PaymentConfirmedV1
from tokendist.schemas.events import MAX_AMOUNT_MINOR

log = structlog.get_logger("tokendist.legacy")

NAMESPACE = uuid.UUID("0d6c1c8e-52f4-4f7e-bb3f-8f2a4c3d9e11")
PROVIDER = "legacy"


def topup_event_id(user_id: str, tokenization_id: str, audit_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{user_id}/{tokenization_id}/{audit_id}")


@dataclass
class Settlement:
    dry_run: bool
    adopted: list[Row] = field(default_factory=list)
    already: list[tuple[Row, uuid.UUID]] = field(default_factory=list)
    skipped: list[tuple[Row, str]] = field(default_factory=list)
    overpaid: list[Row] = field(default_factory=list)

    @property
    def topups(self) -> list[Row]:
        return [r for r in self.adopted if r.topup]

    def render(self) -> str:
        verb = "would " if self.dry_run else ""
        lines = [
            ("dry run: nothing written\n" if self.dry_run else "")
            + f"{verb}adopt {len(self.adopted)} investors (opening balances "
            f"{sum(r.paid for r in self.adopted)} from the chain)",
            f"{verb}top up {len(self.topups)} investors through the outbox "
            f"({sum(r.topup for r in self.topups)} base units)",
            f"already settled: {len(self.already)}",
            f"left for a human: {len(self.skipped)}",
        ]
        lines += [
            f"  - {r.user_id or r.wallet} / {r.tokenization_id}: {why}" for r, why in self.skipped
        ]
        lines.append(
            f"over-paid, reported only: {len(self.overpaid)} (recovery is the operator's "
            "decision; with an ERC-3643 token an agent's forcedTransfer is the tool)"
        )
        lines += [
            f"  - {r.user_id} / {r.tokenization_id}: {r.difference} over, wallet {r.wallet}, "
            f"transactions {' '.join(t.tx_hash for t in r.transfers)}"
            for r in self.overpaid
        ]
        return "\n".join(lines)


def _check(audit: Audit, tokenizations: dict[str, asyncpg.Record]) -> None:
    """Refuse, before anything is written, an audit of another chain or token."""
    for tokenization_id, (address, _) in audit.tokens.items():
        tk = tokenizations.get(tokenization_id)
        if tk is None:
            raise InvalidInput(
                f"tokenization {tokenization_id} is not recorded here: record its token and "
                "Distributor first (README: Adopting tokendist from a running system)"
            )
        if tk["token_address"].lower() != address.lower() or tk["chain_id"] != audit.chain_id:
            raise InvalidInput(
                f"the audit read token {address} on chain {audit.chain_id}; tokenization "
                f"{tokenization_id} is {tk['token_address']} on chain {tk['chain_id']}"
            )


def _skip_reason(row: Row) -> str | None:
    if row.finding is Finding.AMBIGUOUS:
        return f"ambiguous: {row.note}"
    if row.finding is Finding.UNMATCHED:
        return f"unmatched: {row.paid} paid to {row.wallet} ({row.note})"
    if row.wallet is None:
        return "no wallet in the old profiles: record one, then audit again"
    return None


async def settle(
    store: Adoptions, audit: Audit, *, dry_run: bool, failpoints: Failpoints | None = None
) -> Settlement:
    tokenizations = await store.tokenizations()
    _check(audit, tokenizations)
    adopted = await store.adopted()
    result = Settlement(dry_run=dry_run)
    result.overpaid = [r for r in audit.rows if r.finding is Finding.OVERPAID]
    for row in audit.rows:
        if (why := _skip_reason(row)) is not None:
            result.skipped.append((row, why))
            continue
        assert row.wallet is not None
        key = (row.users[0], row.tokenization_id)
        if key in adopted:
            result.already.append((row, adopted[key]))
            continue
        current = await store.wallet_of(row.users[0])
        if current is not None and current.lower() != row.wallet.lower():
            result.skipped.append((row, f"tokendist knows this investor at {current}"))
            continue
        if dry_run or await _adopt(store, audit, row, tokenizations[row.tokenization_id]):
            result.adopted.append(row)
            if failpoints is not None:
                failpoints.hit(f"legacy_settle:after:{len(result.adopted)}")
        else:  # another settle run adopted it between our read and our insert
            result.already.append((row, audit.audit_id))
    return result


async def _adopt(store: Adoptions, audit: Audit, row: Row, tokenization: asyncpg.Record) -> bool:
    user_id, wallet = row.users[0], str(to_checksum_address(row.wallet or ""))
    event = None
    if row.topup:
        event = PaymentConfirmedV1.model_validate(
            {
                "event_id": topup_event_id(user_id, row.tokenization_id, audit.audit_id),
                "occurred_at": datetime.now(UTC),
                "data": _topup_data(row, user_id, wallet, tokenization["property_id"], audit),
            },
            strict=False,
        )
    done = await store.adopt(
        Adoption(
            user_id=user_id,
            tokenization_id=row.tokenization_id,
            audit_id=audit.audit_id,
            finding=row.finding.value,
            wallet=wallet,
            kyc_status="approved" if row.kyc_approved else "pending",
            bought=row.bought,
            chain_paid=row.paid,
            legacy_db_holding=row.db_holding,
            topup=row.topup,
            property_id=tokenization["property_id"],
            reason=f"audit {audit.audit_id}: adopted what the old wallets paid on-chain, "
            f"{row.paid}; the old token_holdings said {row.db_holding}",
        ),
        event,
    )
    if done:
        log.info(
            "legacy_investor_adopted",
            user_id=user_id,
            tokenization_id=row.tokenization_id,
            opening=str(row.paid),
            topup=str(row.topup),
            event_id=None if event is None else str(event.event_id),
        )
    return done


def _topup_data(
    row: Row, user_id: str, wallet: str, property_id: str, audit: Audit
) -> dict[str, object]:
    event_id = topup_event_id(user_id, row.tokenization_id, audit.audit_id)
    reference = f"legacy-{event_id}"
    return {
        "user_id": user_id,
        "investment_id": reference,
        "tokenization_id": row.tokenization_id,
        "property_id": property_id,
        "tokens": str(row.topup),
        # The schema's bounds: an allocation the old system gave away still needs one kobo.
        "amount_minor": min(max(row.amount_minor, 1), MAX_AMOUNT_MINOR),
        "currency": "NGN",
        "wallet_address": wallet,
        "provider": PROVIDER,
        "provider_reference": reference,
    }
