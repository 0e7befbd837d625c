"""The client side of a run: investors, their payments, webhook deliveries, KYC approvals.

Everything is drawn from the run's rng (wallet keys included), so a replayed seed pays
the same amounts to the same addresses. Payments go through ``tokendist.sim.payments`` exactly
as the upstream payment service's webhook handler does: payment row and outbox row in one
transaction. A delivery that fails because the database is restarting is delivered again,
as a payment provider retries a webhook; the dedupe makes that harmless by design.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import asyncpg
from eth_account import Account

from tests.faults.retry import retrying
from tests.faults.sandbox import COUNTRY
from tokendist.ops.kyc import approve
from tokendist.ops.trex import Trex
from tokendist.sim import payments as service
from tokendist.sim.payments import Payment

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@dataclass(frozen=True)
class Investor:
    id: str
    wallet: str
    kyc_pending: bool  # registered as pending; approved at a random instant of the run
    wallet_on_file: bool  # pending investors may only give their wallet at approval


@dataclass
class Workload:
    investors: list[Investor]
    payments: list[Payment]
    confirmed: dict[str, Payment] = field(default_factory=dict)
    approved: set[str] = field(default_factory=set)
    deliveries: int = 0  # webhook deliveries, duplicates included
    # An ERC-3643 token's: an approval also registers the investor's identity on-chain
    # (every investor under one country), and so does registering an approved investor.
    trex: Trex | None = None

    @classmethod
    def plan(
        cls, rng: random.Random, name: str, tokenization: tuple[str, str], n_payments: int
    ) -> Workload:
        """``name`` prefixes every id; ``tokenization`` is (tokenization id, property id)."""
        investors = []
        for u in range(rng.randint(2, 5)):
            key = rng.randrange(1, SECP256K1_ORDER)
            pending = rng.random() < 0.35
            investors.append(
                Investor(
                    id=f"{name}-user-{u}",
                    wallet=str(Account.from_key(key.to_bytes(32, "big")).address),
                    kyc_pending=pending,
                    wallet_on_file=not pending or rng.random() < 0.5,
                )
            )
        plan = []
        for i in range(n_payments):
            who = rng.choice(investors)
            plan.append(
                Payment(
                    user_id=who.id,
                    investment_id=f"{name}-inv-{i}",
                    tokenization_id=tokenization[0],
                    property_id=tokenization[1],
                    tokens=rng.randint(1, 10**6) * 10**12,
                    amount_minor=rng.randint(1_000, 5_000_000),
                    reference=f"PSK-{name}-{i}",
                    wallet_address=who.wallet if who.wallet_on_file else None,
                )
            )
        return cls(investors=investors, payments=plan)

    @property
    def pending(self) -> list[Investor]:
        return [u for u in self.investors if u.kyc_pending and u.id not in self.approved]

    def total_tokens(self) -> int:
        return sum(p.tokens for p in self.payments)

    def expected_by_user(self) -> dict[str, int]:
        expected = {u.id: 0 for u in self.investors}
        for p in self.confirmed.values():
            expected[p.user_id] += p.tokens
        return expected

    def wallet_of(self, user_id: str) -> str:
        return next(u.wallet for u in self.investors if u.id == user_id)

    async def register(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            for u in self.investors:
                await service.register_user(
                    conn,
                    u.id,
                    u.wallet if u.wallet_on_file else None,
                    "pending" if u.kyc_pending else "approved",
                )
        for u in self.investors:
            if self.trex is not None and not u.kyc_pending:
                await self.approve(pool, u)

    async def deliver(self, pool: asyncpg.Pool, p: Payment, copies: int = 1) -> None:
        """The provider's webhook for ``p``, ``copies`` times at once (its retries race)."""

        async def once() -> None:
            async def attempt() -> None:
                async with pool.acquire() as conn:
                    await service.confirm(conn, p)

            await retrying(attempt, what=f"confirm {p.investment_id}")

        self.deliveries += copies
        await asyncio.gather(*(once() for _ in range(copies)))
        self.confirmed[p.investment_id] = p

    async def approve(self, pool: asyncpg.Pool, investor: Investor) -> int:
        async def attempt() -> int:
            async with pool.acquire() as conn:
                wallet = None if investor.wallet_on_file else investor.wallet
                if self.trex is None:
                    return await approve(conn, investor.id, wallet)
                return await approve(conn, investor.id, wallet, trex=self.trex, country=COUNTRY)

        released = await retrying(attempt, what=f"approve {investor.id}")
        self.approved.add(investor.id)
        return released
