"""``tokendist verify``: read-only invariant checks over chain, distributions, holdings
and ledger. Exit code 0 only when every check holds.

The checks (TigerBeetle-style: stated as invariants, checked from independent records):

Every check holds at any instant, not only at rest: transfers in flight (signed or
submitted) are allowed to be mined or not.

1. confirmations ↔ distributions: every payment confirmed upstream has exactly one
   distribution (those younger than the grace period may still be in flight), and every
   distribution has a confirmation;
2. distributions ↔ chain: every confirmed or credited distribution has exactly one
   payout on-chain (a ``Distributed`` log with its payment id, paired with the token's
   ``Transfer`` of its recipient and amount: ``contracts.payouts``); no payout lacks one;
3. holdings ↔ ledger: per (user, tokenization) holdings = credited total = ledger
   balance; every event's ledger entries sum to zero, and so does the whole ledger;
4. balances: each recipient's on-chain ``balanceOf`` equals what this system paid it
   (only meaningful when no other flow moves these tokens: ``shared_chain`` relaxes it);
5. liveness: no outbox row unpublished and no distribution in an intermediate state for
   longer than the grace period.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from tokendist.consumer.chain import Chain
from tokendist.core import db
from tokendist.ops.payouts import read_payouts
from tokendist.ops.repository import ToolRepository


@dataclass
class Check:
    name: str
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Report:
    checks: list[Check]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def render(self) -> str:
        lines = [f"distributions by state: {dict(sorted(self.counts.items()))}"]
        for check in self.checks:
            mark = "ok  " if check.ok else "FAIL"
            note = f" ({check.skipped})" if check.skipped else ""
            lines.append(f"[{mark}] {check.name}{note}")
            lines.extend(f"       - {p}" for p in check.problems[:20])
            if len(check.problems) > 20:
                lines.append(f"       ... and {len(check.problems) - 20} more")
        lines.append("verdict: " + ("all invariants hold" if self.ok else "INVARIANTS VIOLATED"))
        return "\n".join(lines)


async def verify(
    conn: db.Connection, chain: Chain, *, grace_s: float = 300.0, shared_chain: bool = False
) -> Report:
    """Every check, over the database ``conn`` is connected to."""
    return await check_all(ToolRepository(conn), chain, grace_s=grace_s, shared_chain=shared_chain)


async def check_all(
    ops: ToolRepository, chain: Chain, *, grace_s: float = 300.0, shared_chain: bool = False
) -> Report:
    checks = [
        await _confirmations(ops, grace_s),
        await _chain_logs(ops, chain),
        await _books(ops),
        await _balances(ops, chain, shared_chain),
        await _liveness(ops, grace_s),
    ]
    return Report(checks=checks, counts=await ops.counts())


async def _confirmations(ops: ToolRepository, grace_s: float) -> Check:
    check = Check("every confirmed payment has exactly one distribution")
    for row in await ops.undistributed(grace_s):
        check.problems.append(f"investment {row['investment_id']} confirmed, never distributed")
    for row in await ops.unconfirmed_distributions():
        check.problems.append(f"distribution {row['event_id']} has no confirmed payment")
    return check


async def _all_payouts(ops: ToolRepository, chain: Chain) -> list[dict[str, Any]]:
    found = []
    for tk in await ops.tokenizations():
        for payout in await read_payouts(
            chain.w3, distributor=tk["distributor_address"], token=tk["token_address"]
        ):
            found.append(
                {
                    "tokenization_id": tk["id"],
                    "payment_id": "0x" + payout.payment_id.hex(),
                    "recipient": payout.to,
                    "amount": payout.amount,
                }
            )
    return found


async def _chain_logs(ops: ToolRepository, chain: Chain) -> Check:
    check = Check("every on-chain distribution has exactly one matching payout on-chain")
    by_payment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in await _all_payouts(ops, chain):
        by_payment[entry["payment_id"]].append(entry)
    known = set()
    for d in await ops.onchain_distributions():
        known.add(d["payment_id"])
        found = by_payment.get(d["payment_id"], [])
        # A signed or submitted transfer may or may not be mined yet: 0 or 1 payout is fine.
        allowed = {1} if d["state"] in ("confirmed", "credited") else {0, 1}
        if len(found) not in allowed:
            check.problems.append(f"event {d['event_id']} ({d['state']}): {len(found)} payouts")
            continue
        if not found:
            continue
        entry = found[0]
        if entry["recipient"] != d["recipient"].lower() or entry["amount"] != int(d["tokens"]):
            check.problems.append(
                f"event {d['event_id']}: chain pays {entry['amount']} to {entry['recipient']}, "
                f"expected {d['tokens']} to {d['recipient']}"
            )
    for payment in by_payment:
        if payment not in known:
            check.problems.append(f"payout of payment {payment} has no signed distribution")
    return check


async def _books(ops: ToolRepository) -> Check:
    check = Check("holdings = credited distributions = ledger; the ledger balances")
    for r in await ops.holdings_mismatches():
        check.problems.append(
            f"user {r['user_id']} / {r['tokenization_id']}: holding {r['holding']}, "
            f"credited {r['credited']}, ledger {r['ledger']}"
        )
    for r in await ops.unbalanced_ledger_events():
        check.problems.append(f"ledger entries of event {r['event_id']} sum to {r['total']}")
    total = await ops.ledger_total()
    if total != 0:
        check.problems.append(f"debits and credits differ by {total}")
    return check


async def _balances(ops: ToolRepository, chain: Chain, shared_chain: bool) -> Check:
    check = Check("on-chain balanceOf = tokens this system distributed to each recipient")
    if shared_chain:
        check.skipped = "skipped: the tokens are moved by other flows too (--shared-chain)"
        return check
    tokens = {r["id"]: r["token_address"] for r in await ops.tokenizations()}
    for r in await ops.recipient_totals():
        balance = await chain.token_balance(tokens[r["tokenization_id"]], r["recipient"])
        settled, inflight = int(r["settled"]), int(r["inflight"])
        # Transfers in flight may land any moment: the balance lies between the settled
        # total and settled + in flight; at rest (nothing in flight) it equals settled.
        if not settled <= balance <= settled + inflight:
            window = f"{settled}" if not inflight else f"{settled}..{settled + inflight}"
            check.problems.append(
                f"{r['recipient']} holds {balance} of {r['tokenization_id']}, "
                f"this system paid {window}"
            )
    return check


async def _liveness(ops: ToolRepository, grace_s: float) -> Check:
    check = Check(f"nothing unpublished or stuck for more than {grace_s:g}s")
    stale = await ops.stale_outbox(grace_s)
    if stale is not None and stale["n"]:
        check.problems.append(f"{stale['n']} outbox rows unpublished since {stale['oldest']}")
    stuck = Counter(r["state"] for r in await ops.stuck_distributions(grace_s))
    for state, n in sorted(stuck.items()):
        check.problems.append(f"{n} distributions stuck in {state}")
    return check
