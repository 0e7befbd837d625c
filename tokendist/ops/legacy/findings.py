"""The audit's rule, with no I/O: old investments and old transfers, joined per investor
and per tokenization.

The old system sent deltas against the on-chain balance and aggregates of several
investments in one transfer (the investigation's #3 and #7), so no transfer can be tied
to one investment. The rule therefore compares totals, per (investor, tokenization):

- **bought**: the tokens of the investor's investments whose ``payment_status`` is
  ``confirmed`` or ``tokens_distributed`` (paid for; other statuses bought nothing);
- **paid**: every ERC-20 ``Transfer`` of that tokenization's token out of an old
  distributor wallet to a wallet the investor is known by (the profile's wallet, or one
  the old distribution events recorded for them).

Each transfer lands in exactly one row, found by (token, recipient): never counted twice.
A wallet known for two or more investors cannot say whose tokens it received: those
investors form one ``ambiguous`` row with their joint figures (a guess would pay someone
twice or not at all). A transfer to a wallet of no investor of that tokenization is
``unmatched``.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

PAID_STATUSES = frozenset({"confirmed", "tokens_distributed"})
USER_SEPARATOR = "+"  # never in an id (the events' identifier rule): a group splits back


class Finding(enum.StrEnum):
    SETTLED = "settled"  # paid exactly what was bought; the old database agrees
    HOLDINGS_WRONG = "holdings_wrong"  # paid exactly; the old token_holdings says otherwise
    NEVER_PAID = "never_paid"  # bought, no transfer at all
    UNDERPAID = "underpaid"  # paid less than bought
    OVERPAID = "overpaid"  # paid more than bought
    AMBIGUOUS = "ambiguous"  # investors sharing a wallet: their transfers cannot be split
    UNMATCHED = "unmatched"  # a transfer to no investor of its tokenization

    @property
    def tops_up(self) -> bool:
        return self in (Finding.NEVER_PAID, Finding.UNDERPAID)

    @property
    def adopted(self) -> bool:
        """Settle takes the investor's holdings over from the chain."""
        return self not in (Finding.AMBIGUOUS, Finding.UNMATCHED)


@dataclass(frozen=True, slots=True)
class Investment:
    id: str
    user_id: str
    tokenization_id: str
    tokens: int  # base units
    amount_minor: int
    status: str


@dataclass(frozen=True, slots=True)
class Investor:
    user_id: str
    wallet: str | None  # where a top-up goes: the profile's wallet, checksummed
    kyc_approved: bool
    known_wallets: frozenset[str]  # lower case: every wallet transfers may have gone to


@dataclass(frozen=True, slots=True)
class Transfer:
    tokenization_id: str
    tx_hash: str
    log_index: int
    block: int
    sender: str  # lower case
    recipient: str  # lower case
    amount: int


@dataclass
class Row:
    finding: Finding
    users: tuple[str, ...]  # one investor; several (ambiguous); none (unmatched)
    tokenization_id: str
    wallet: str | None
    kyc_approved: bool
    bought: int
    paid: int
    db_holding: int
    amount_minor: int  # what the investor paid for ``bought``, in minor units
    investments: tuple[str, ...] = ()
    transfers: list[Transfer] = field(default_factory=list)
    note: str = ""

    @property
    def user_id(self) -> str:
        return USER_SEPARATOR.join(self.users)

    @property
    def difference(self) -> int:
        """Paid minus bought: above zero over-paid, below zero owed."""
        return self.paid - self.bought

    @property
    def topup(self) -> int:
        return self.bought - self.paid if self.finding.tops_up else 0


def _groups(investors: Iterable[Investor]) -> dict[str, tuple[str, ...]]:
    """Each user's group: the users linked to it through shared wallets (union-find)."""
    parent: dict[str, str] = {}

    def root(u: str) -> str:
        while parent.setdefault(u, u) != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    owner: dict[str, str] = {}
    for inv in investors:
        root(inv.user_id)
        for wallet in inv.known_wallets:
            if wallet in owner:
                parent[root(inv.user_id)] = root(owner[wallet])
            else:
                owner[wallet] = inv.user_id
    members: dict[str, list[str]] = defaultdict(list)
    for u in parent:
        members[root(u)].append(u)
    return {u: tuple(sorted(members[root(u)])) for u in parent}


def classify(
    investments: Iterable[Investment],
    investors: Iterable[Investor],
    holdings: dict[tuple[str, str], int],
    transfers: Iterable[Transfer],
) -> list[Row]:
    """One row per (investor or group sharing a wallet, tokenization) with investments,
    and one per (tokenization, wallet) receiving unmatched transfers; sorted."""
    people = {i.user_id: i for i in investors}
    group_of = _groups(people.values())
    by_wallet = {w: group_of[i.user_id] for i in people.values() for w in i.known_wallets}
    rows: dict[tuple[tuple[str, ...], str], Row] = {}
    for inv in investments:
        group = group_of.get(inv.user_id, (inv.user_id,))
        row = rows.get((group, inv.tokenization_id)) or _new_row(
            rows, group, inv.tokenization_id, people, holdings
        )
        row.investments += (inv.id,)
        if inv.status in PAID_STATUSES:
            row.bought += inv.tokens
            row.amount_minor += inv.amount_minor
    unmatched: dict[tuple[str, str], Row] = {}
    for t in transfers:
        found = rows.get((by_wallet.get(t.recipient, ()), t.tokenization_id))
        row = found or unmatched.setdefault(
            (t.tokenization_id, t.recipient), _unmatched_row(t, by_wallet)
        )
        row.transfers.append(t)
        row.paid += t.amount
    for row in rows.values():
        row.finding = _finding(row)
    return sorted(
        [*rows.values(), *unmatched.values()],
        key=lambda r: (r.tokenization_id, r.finding is Finding.UNMATCHED, r.users, r.wallet or ""),
    )


def _new_row(
    rows: dict[tuple[tuple[str, ...], str], Row],
    group: tuple[str, ...],
    tokenization_id: str,
    people: dict[str, Investor],
    holdings: dict[tuple[str, str], int],
) -> Row:
    known = [people[u] for u in group if u in people]
    row = Row(
        finding=Finding.SETTLED,
        users=group,
        tokenization_id=tokenization_id,
        wallet=known[0].wallet if len(group) == 1 and known else None,
        kyc_approved=bool(known) and all(p.kyc_approved for p in known),
        bought=0,
        paid=0,
        db_holding=sum(holdings.get((u, tokenization_id), 0) for u in group),
        amount_minor=0,
    )
    if len(group) > 1:
        shared = sorted({w for p in known for w in p.known_wallets})
        row.note = f"investors share wallets {' '.join(shared)}: whose tokens is unknowable"
    rows[(group, tokenization_id)] = row
    return row


def _unmatched_row(t: Transfer, by_wallet: dict[str, tuple[str, ...]]) -> Row:
    owners = by_wallet.get(t.recipient, ())
    note = (
        f"wallet of {USER_SEPARATOR.join(owners)}, who has no investment in this tokenization"
        if owners
        else "wallet of no known investor"
    )
    return Row(
        finding=Finding.UNMATCHED,
        users=(),
        tokenization_id=t.tokenization_id,
        wallet=t.recipient,
        kyc_approved=False,
        bought=0,
        paid=0,
        db_holding=0,
        amount_minor=0,
        note=note,
    )


def _finding(row: Row) -> Finding:
    if len(row.users) > 1:
        return Finding.AMBIGUOUS
    if row.paid == row.bought:
        return Finding.SETTLED if row.db_holding == row.bought else Finding.HOLDINGS_WRONG
    if row.paid == 0:
        return Finding.NEVER_PAID
    return Finding.UNDERPAID if row.paid < row.bought else Finding.OVERPAID
