"""After the faults: wait until the system is quiet, then count, from independent records
(the payment service's rows, the chain's logs, the holdings table, balanceOf), what was
lost and what was doubled. ``verify`` is run too, but the harness does not trust it
alone: a checker that shares the system's blind spots would miss its bugs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.faults.context import Ctx
from tests.faults.nemesis import redrive_now, top_up_and_redrive
from tests.faults.retry import retrying
from tests.integration import harness
from tokendist.consumer import contracts
from tokendist.consumer.chain import Chain
from tokendist.custody import LocalSigner
from tokendist.ops.payouts import read_payouts

STATES = "SELECT state, count(*) AS n FROM distributions GROUP BY state"
NOT_CREDITED = """
SELECT c.investment_id, d.state, d.failure_reason FROM payment_confirmations c
LEFT JOIN distributions d ON d.investment_id = c.investment_id
WHERE d.state IS DISTINCT FROM 'credited' ORDER BY c.investment_id
"""
TERMINAL_POLLS = 8
UNPUBLISHED = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
# What the runbook's `tokendist redrive` after a top-up picks up: failures the consumer
# marked retryable (refused by simulation, or reverted on chain: nothing was paid).
SHORT_OF_TOKENS = "SELECT count(*) FROM distributions WHERE state = 'failed' AND retryable"


async def _groups_at_end(ctx: Ctx) -> list[str]:
    lagging = []
    for group in [ctx.world.settings.consumer_group, *ctx.replay_groups]:
        settings = ctx.world.settings.model_copy(update={"consumer_group": group})
        if not await harness.committed_to_end(settings):
            lagging.append(group)
    return lagging


async def outstanding(ctx: Ctx) -> tuple[list[str], bool]:
    """What still keeps the run from being quiet (empty when it is), and whether all of it
    is terminal: payments whose distribution ``failed`` in a way nothing will retry."""
    pool = ctx.world.pool
    left = []
    rows = await pool.fetch(NOT_CREDITED)
    states = Counter(str(r["state"]) for r in rows)
    if rows:
        left.append(f"{len(rows)} confirmed payments not credited {dict(states)}")
    unpublished = await pool.fetchval(UNPUBLISHED)
    if unpublished:
        left.append(f"{unpublished} outbox rows unpublished")
    lagging = await _groups_at_end(ctx)
    if lagging:
        left.append(f"groups not committed to the end: {', '.join(lagging)}")
    short = ctx.tokens_short and await pool.fetchval(SHORT_OF_TOKENS)
    terminal = set(states) == {"failed"} and not unpublished and not lagging and not short
    return left, terminal


async def wait_quiescent(ctx: Ctx, timeout: float) -> list[str]:
    """Poll until nothing is outstanding; returns the last outstanding list (empty: quiet).
    Members that died by themselves are restarted, as a supervisor would. Only terminal
    failures left for ``TERMINAL_POLLS`` polls in a row: no use waiting any longer."""
    deadline = time.monotonic() + timeout
    left = ["not checked yet"]
    terminal_polls = 0
    while time.monotonic() < deadline:
        ctx.fleet.restore(ctx.relays, ctx.consumers)
        if ctx.tokens_short:
            # Failures that raced the top-up (simulated or mined before it landed) are
            # re-driven like the first ones, as the runbook says; in runs funded in full
            # nothing is ever re-driven, so any failure there is counted as lost.
            if not ctx.topped_up:
                await top_up_and_redrive(ctx)
            elif await retrying(lambda: ctx.world.pool.fetchval(SHORT_OF_TOKENS), what="short"):
                await redrive_now(ctx)
        left, terminal = await retrying(lambda: outstanding(ctx), what="quiescence")
        if not left:
            return []
        terminal_polls = terminal_polls + 1 if terminal else 0
        if terminal_polls >= TERMINAL_POLLS:
            return [*left, "(terminal: nothing retries a failed distribution)"]
        await asyncio.sleep(1.0)
    return left


@dataclass
class Tally:
    confirmed: int = 0  # payments confirmed upstream (payment_confirmations)
    credited: int = 0  # distributions credited in PostgreSQL
    logs: int = 0  # Distributed logs on chain
    transfers: int = 0  # Transfer logs out of the Distributor
    lost: int = 0
    doubled: int = 0
    wrong: int = 0  # paid, but to another address or another amount
    problems: list[str] = field(default_factory=list)


async def _transfers_out(ctx: Ctx) -> list[Any]:
    tk = ctx.world.deployment
    sender = "0x" + "0" * 24 + tk.distributor_address.lower()[2:]
    flt: dict[str, Any] = {"address": tk.token_address, "fromBlock": "0x0", "toBlock": "latest"}
    flt["topics"] = [contracts.TRANSFER_TOPIC, sender]
    logs: list[Any] = await ctx.stack.rpc("eth_getLogs", flt)
    return logs


async def tally(ctx: Ctx) -> Tally:
    t = Tally()
    pool = ctx.world.pool
    tk = ctx.world.deployment
    confirmations = {
        r["investment_id"]: r
        for r in await pool.fetch(
            "SELECT investment_id, user_id, tokens FROM payment_confirmations"
        )
    }
    dists = {r["investment_id"]: r for r in await pool.fetch("SELECT * FROM distributions")}
    t.confirmed = len(confirmations)
    t.credited = sum(1 for d in dists.values() if d["state"] == "credited")
    for inv in ctx.workload.confirmed.keys() - confirmations.keys():
        t.lost += 1
        t.problems.append(f"{inv}: webhook answered, no payment confirmation recorded")
    _, key = ctx.world.settings.require_chain()
    chain = Chain(ctx.stack.rpc_url, LocalSigner(key))
    try:
        logs = [
            ("0x" + p.payment_id.hex(), p.to, p.amount)
            for p in await read_payouts(
                chain.w3, distributor=tk.distributor_address, token=tk.token_address
            )
        ]
        balances = {
            u.id: await chain.token_balance(tk.token_address, u.wallet)
            for u in ctx.workload.investors
        }
    finally:
        await chain.close()
    t.logs = len(logs)
    t.transfers = len(await _transfers_out(ctx))
    by_payment: dict[str, list[tuple[str, str, int]]] = {}
    for entry in logs:
        by_payment.setdefault(entry[0], []).append(entry)
    _per_investment(ctx, t, confirmations, dists, by_payment)
    if t.transfers != t.logs:
        t.problems.append(f"{t.transfers} token transfers out, {t.logs} Distributed logs")
        t.doubled += max(0, t.transfers - t.logs)
    holdings = {
        r["user_id"]: int(r["balance"])
        for r in await pool.fetch("SELECT user_id, balance FROM token_holdings")
    }
    _per_investor(ctx, t, holdings, balances)
    return t


def _per_investment(
    ctx: Ctx,
    t: Tally,
    confirmations: dict[str, Any],
    dists: dict[str, Any],
    by_payment: dict[str, list[tuple[str, str, int]]],
) -> None:
    known = set()
    for inv, conf in sorted(confirmations.items()):
        pid = "0x" + contracts.payment_id(inv).hex()
        known.add(pid)
        found = by_payment.get(pid, [])
        dist = dists.get(inv)
        state = None if dist is None else dist["state"]
        if state != "credited" or not found:
            t.lost += 1
            reason = "" if dist is None else f" ({dist['failure_reason'] or ''})"
            t.problems.append(f"{inv}: state {state}{reason}, {len(found)} Distributed logs")
        if len(found) > 1:
            t.doubled += 1
            t.problems.append(f"{inv}: paid {len(found)} times on chain")
        wallet = ctx.workload.wallet_of(str(conf["user_id"])).lower()
        for _, to, amount in found:
            if to != wallet or amount != int(conf["tokens"]):
                t.wrong += 1
                t.problems.append(
                    f"{inv}: paid {amount} to {to}, owed {conf['tokens']} to {wallet}"
                )
    for pid in by_payment.keys() - known:
        t.doubled += 1
        t.problems.append(f"Distributed log {pid} matches no confirmed payment")


def _per_investor(ctx: Ctx, t: Tally, holdings: dict[str, int], balances: dict[str, int]) -> None:
    """Holdings and balanceOf against what each investor paid for. Shortfalls are already
    counted per investment above unless nothing there explains them."""
    expected = ctx.workload.expected_by_user()
    short = 0
    for user, owed in sorted(expected.items()):
        for what, have in (("holdings", holdings.get(user, 0)), ("balanceOf", balances[user])):
            if have > owed:
                t.doubled += 1
                t.problems.append(f"{user}: {what} {have} exceeds the {owed} paid for")
            elif have < owed:
                short += 1
                t.problems.append(f"{user}: {what} {have} short of the {owed} paid for")
    if short and not t.lost:
        t.lost += short
