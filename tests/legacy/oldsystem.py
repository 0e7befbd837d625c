"""The old system, reproduced (pure, seeded): the distributor the investigation describes,
run over a stream of investments, with its seven defects, keeping the ground truth.

Each distribution run does what ``distribute-tokens-to-kyc-users`` did: select the
``confirmed`` investments (of one user, or all), aggregate them per (user, tokenization),
read the wallet's on-chain balance, send ``total - balance`` when positive (#3: the delta,
which pays a second investment nothing while the first one's tokens are in the wallet),
mark the investments ``tokens_distributed`` (this update sometimes fails, #6, leaving them
``confirmed`` to be aggregated again, #7), and upsert ``token_holdings.balance = total``
(#1: replaced, not added). Runs that overlap read the same snapshot before any of them
writes (#2): webhook re-deliveries triggering several runs (#4) and the reconciliation
job racing a regular run (#5) both pay twice that way. A balance read while the previous
transfer is still pending misses it (#3's pending case). Nothing here touches a database
or a chain: ``history`` writes the result into both.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from tokendist.ops.legacy.findings import PAID_STATUSES, Finding

PRICE_NGN = Decimal("5000.00")
NAMES = uuid.UUID("7e1f3f64-6c1b-4b8e-9d0a-3f5d8f2a1c40")


@dataclass
class User:
    id: str
    wallet: str  # lower-case hex
    kyc_status: str


@dataclass
class Investment:
    id: str
    user_id: str
    tokenization_id: str
    tokens: int  # whole tokens
    amount_ngn: Decimal
    status: str


@dataclass(frozen=True)
class Transfer:
    tokenization_id: str
    sender: int  # index of the old wallet
    recipient: str
    tokens: int


@dataclass
class DistributionEvent:
    tokenization_id: str
    user_id: str
    investment_id: str
    tokens_requested: int
    tokens_transferred: int
    wallet: str
    status: str


@dataclass
class _Item:
    user_id: str
    tokenization_id: str
    total: int
    ids: list[str]
    delta: int


@dataclass
class OldSystem:
    seed: int
    tokenizations: list[str]
    users: list[User] = field(default_factory=list)
    investments: dict[str, Investment] = field(default_factory=dict)
    holdings: dict[tuple[str, str], int] = field(default_factory=dict)
    transfers: list[Transfer] = field(default_factory=list)
    events: list[DistributionEvent] = field(default_factory=list)
    defects: Counter[str] = field(default_factory=Counter)
    _balance: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    _last_paid: dict[tuple[str, str], int] = field(default_factory=dict)
    _status_failed: set[str] = field(default_factory=set)
    _sender: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _id(self, kind: str, n: int) -> str:
        return str(uuid.uuid5(NAMES, f"{self.seed}/{kind}/{n}"))

    # --- the history ---------------------------------------------------------------------

    def run(self, *, users: int, investments: int, wallets: list[str]) -> None:
        """``users`` investors (a few sharing a wallet, a few without KYC), ``investments``
        payments over time; the old distributor wallet changes halfway."""
        for n in range(users):
            kyc = "pending" if n % 37 == 5 else "approved"
            self.users.append(User(self._id("user", n), wallets[n].lower(), kyc))
        for a, b in ((3, 4), (40, 41), (90, 91)):  # investors who registered one wallet
            self.users[b].wallet = self.users[a].wallet
        for n in range(investments):
            self._sender = 0 if n < investments // 2 else 1
            self._invest(n)
            if n % 45 == 44:
                self._reconcile(race=n % 90 == 89)
        self._strays(wallets[users:])

    def _invest(self, n: int) -> None:
        user = self.rng.choice(self.users[: max(12, len(self.users) * (n + 1) // 300)])
        tokenization = self.rng.choice(self.tokenizations)
        tokens = self.rng.randint(1, 400)
        inv = Investment(
            self._id("investment", n), user.id, tokenization, tokens, tokens * PRICE_NGN, "pending"
        )
        self.investments[inv.id] = inv
        roll = self.rng.random()
        if roll < 0.06:
            inv.status = "failed"
            return
        if roll < 0.09:
            return  # never paid for: stays pending
        inv.status = "confirmed"
        if roll < 0.17:
            return  # the completion trigger was lost: confirmed, no run
        deliveries = 1 if self.rng.random() < 0.8 else self.rng.randint(2, 3)
        self.defects["4_webhook_retried"] += deliveries - 1
        if deliveries > 1 and self.rng.random() < 0.6:
            self._concurrently([{user.id}] * deliveries)  # the retries overlap
        else:
            for _ in range(deliveries):
                self._concurrently([{user.id}])

    def _reconcile(self, *, race: bool) -> None:
        """The reconciliation job: every user with confirmed investments, run; when
        ``race``, at the same time as a regular run for one of them."""
        behind = {i.user_id for i in self.investments.values() if i.status == "confirmed"}
        if not behind:
            return
        if race:
            self.defects["5_reconcile_raced"] += 1
            self._concurrently([behind, {self.rng.choice(sorted(behind))}])
        else:
            self._concurrently([behind])

    def _strays(self, fresh_wallets: list[str]) -> None:
        """Hand-made transfers to no investor, and one to an investor of another property."""
        for wallet in fresh_wallets[:4]:
            self._transfer(self.tokenizations[0], wallet.lower(), self.rng.randint(1, 50))
        invested = {(i.user_id, i.tokenization_id) for i in self.investments.values()}
        shared = {u.wallet for u in self.users if sum(v.wallet == u.wallet for v in self.users) > 1}
        for user in self.users:
            for tk in self.tokenizations:
                if (user.id, tk) not in invested and user.wallet not in shared:
                    self._transfer(tk, user.wallet, 7)
                    return

    # --- the distributor -----------------------------------------------------------------

    def _concurrently(self, scopes: list[set[str]]) -> None:
        """Runs that all read before any writes; one run when ``scopes`` has one entry."""
        plans = [self._plan(scope) for scope in scopes]
        seen: set[tuple[str, str]] = set()
        for plan in plans:
            for item in plan:
                key = (item.user_id, item.tokenization_id)
                if key in seen and item.delta:
                    self.defects["2_concurrent_double_transfer"] += 1
                seen.add(key)
                self._apply(item)

    def _plan(self, scope: set[str]) -> list[_Item]:
        users = {u.id: u for u in self.users}
        agg: dict[tuple[str, str], _Item] = {}
        for inv in self.investments.values():
            if inv.status != "confirmed" or inv.user_id not in scope:
                continue
            if users[inv.user_id].kyc_status != "approved":
                continue
            item = agg.setdefault(
                (inv.user_id, inv.tokenization_id),
                _Item(inv.user_id, inv.tokenization_id, 0, [], 0),
            )
            item.total += inv.tokens
            item.ids.append(inv.id)
        for (user_id, tk), item in agg.items():
            wallet = users[user_id].wallet
            balance = self._balance[(wallet, tk)]
            if (wallet, tk) in self._last_paid and self.rng.random() < 0.15:
                balance -= self._last_paid.pop((wallet, tk))  # read while it was pending
                self.defects["3_stale_balance_read"] += 1
            item.delta = max(item.total - balance, 0)
            if any(i in self._status_failed for i in item.ids):
                self.defects["7_reaggregated_after_failed_update"] += 1
            elif item.delta < item.total:
                self.defects["3_delta_paid_less"] += 1
        return list(agg.values())

    def _apply(self, item: _Item) -> None:
        users = {u.id: u for u in self.users}
        wallet = users[item.user_id].wallet
        if item.delta:
            self._transfer(item.tokenization_id, wallet, item.delta)
        if self.rng.random() < 0.07:
            self.defects["6_status_update_failed"] += 1
            self._status_failed.update(item.ids)
        else:
            for i in item.ids:
                if self.investments[i].status == "confirmed":
                    self.investments[i].status = "tokens_distributed"
        key = (item.user_id, item.tokenization_id)
        if self.holdings.get(key, 0) not in (0, item.total):
            self.defects["1_holdings_replaced"] += 1
        self.holdings[key] = item.total
        for i in item.ids:
            self.events.append(
                DistributionEvent(
                    item.tokenization_id,
                    item.user_id,
                    i,
                    self.investments[i].tokens,
                    item.delta,
                    wallet,
                    "success",
                )
            )

    def _transfer(self, tokenization_id: str, wallet: str, tokens: int) -> None:
        self.transfers.append(Transfer(tokenization_id, self._sender, wallet, tokens))
        self._balance[(wallet, tokenization_id)] += tokens
        self._last_paid[(wallet, tokenization_id)] = tokens

    # --- the ground truth ----------------------------------------------------------------

    def truth(self) -> dict[tuple[str, str], Finding]:
        """(user, tokenization) -> what the audit must find, from the simulator's own
        books (what it sold, what it sent, what it wrote), not from the database or chain."""
        owners: dict[str, list[str]] = defaultdict(list)
        for u in self.users:
            owners[u.wallet].append(u.id)
        sent: Counter[tuple[str, str]] = Counter()
        for t in self.transfers:
            sent[(t.recipient, t.tokenization_id)] += t.tokens
        found: dict[tuple[str, str], Finding] = {}
        bought: Counter[tuple[str, str]] = Counter()
        for inv in self.investments.values():
            key = (inv.user_id, inv.tokenization_id)
            bought[key] += inv.tokens if inv.status in PAID_STATUSES else 0
        wallet_of = {u.id: u.wallet for u in self.users}
        for (user_id, tk), b in bought.items():
            wallet = wallet_of[user_id]
            paid, db = sent[(wallet, tk)], self.holdings.get((user_id, tk), 0)
            if len(owners[wallet]) > 1:
                found[(user_id, tk)] = Finding.AMBIGUOUS
            elif paid == b:
                found[(user_id, tk)] = Finding.SETTLED if db == b else Finding.HOLDINGS_WRONG
            elif paid == 0:
                found[(user_id, tk)] = Finding.NEVER_PAID
            else:
                found[(user_id, tk)] = Finding.UNDERPAID if paid < b else Finding.OVERPAID
        return found

    def unmatched(self) -> dict[tuple[str, str], int]:
        """(tokenization, wallet) -> whole tokens sent to no investor of that tokenization."""
        invested = {(i.user_id, i.tokenization_id) for i in self.investments.values()}
        owners: dict[str, list[str]] = defaultdict(list)
        for u in self.users:
            owners[u.wallet].append(u.id)
        found: Counter[tuple[str, str]] = Counter()
        for t in self.transfers:
            if not any((u, t.tokenization_id) in invested for u in owners.get(t.recipient, [])):
                found[(t.tokenization_id, t.recipient)] += t.tokens
        return dict(found)

    def bought(self, user_id: str, tokenization_id: str) -> int:
        return sum(
            i.tokens
            for i in self.investments.values()
            if i.user_id == user_id
            and i.tokenization_id == tokenization_id
            and i.status in PAID_STATUSES
        )
