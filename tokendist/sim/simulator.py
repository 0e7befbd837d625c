"""A simulated payment service: a stream of confirmed payments at a steady rate, with the
mess real traffic has — webhook re-deliveries, investors not yet verified, and now and
then a malformed message from a buggy producer (written straight to the topic).

Payments travel one of two ways: ``Direct`` calls ``payments.confirm`` (the upstream
service that calls ``outbox.enqueue`` itself), ``ThroughWebhook`` goes the way most
platforms start, over HTTP: the checkout API creates the pending investment, then the
provider's signed ``charge.success`` arrives at ``tokendist webhook``, re-deliveries
being replays of the very same bytes, some of them concurrent.

Deterministic for a seed: the same seed yields the same users, payments and mess.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from eth_account import Account
from eth_utils.crypto import keccak

from tokendist.core import kafka
from tokendist.core.settings import Settings
from tokendist.sim import payments, provider

log = structlog.get_logger("tokendist.simulator")

GARBAGE = [
    b"{not json",
    b'{"event_type": "PaymentConfirmed", "schema_version": 7}',
    b"\xff\xfe binary noise",
]


@dataclass(frozen=True)
class Plan:
    count: int = 200  # payments; 0 = forever
    rate: float = 20.0  # payments per second
    users: int = 40
    unverified_every: int = 8  # every 8th user starts with KYC pending
    duplicate_every: int = 6  # every 6th payment's webhook is delivered twice
    invalid_every: int = 40  # every 40th payment is followed by a malformed message
    seed: int = 7

    def kyc_pending(self, user: int) -> bool:
        """Whether investor ``user`` starts with KYC pending (approved later)."""
        return bool(self.unverified_every) and user % self.unverified_every == 1


@dataclass
class Tally:
    confirmed: int = 0
    duplicates: int = 0
    invalid: int = 0
    unverified_users: set[str] = field(default_factory=set)
    tokens: int = 0


def demo_wallet(seed: int, user: int) -> str:
    """A deterministic wallet per (seed, user): nobody holds its key, it only receives."""
    return str(Account.from_key(keccak(text=f"tokendist-demo:{seed}:{user}")).address)


class Channel(Protocol):
    async def pay(self, payment: payments.Payment, deliveries: int) -> list[bool]:
        """Confirm ``payment``, its webhook delivered ``deliveries`` times; per delivery,
        whether it was the one that confirmed the payment."""
        ...


class Direct:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def pay(self, payment: payments.Payment, deliveries: int) -> list[bool]:
        created = []
        for _ in range(deliveries):
            async with self.pool.acquire() as conn:
                created.append((await payments.confirm(conn, payment)).created)
        return created


class ThroughWebhook:
    """Checkout API, then the provider's signed webhook, over real HTTP."""

    def __init__(self, base_url: str, settings: Settings, session: aiohttp.ClientSession) -> None:
        api_key = settings.checkout_api_key
        if api_key is None:
            raise ValueError("TOKENDIST_CHECKOUT_API_KEY is needed to create investments")
        self.base_url = base_url.rstrip("/")
        self.mode = settings.paystack_mode
        self.session = session
        self.auth = {"Authorization": f"Bearer {api_key.get_secret_value()}"}
        self.provider = provider.Provider(
            f"{self.base_url}/webhooks/paystack",
            settings.require_webhook().get_secret_value(),
            session,
        )

    async def pay(self, payment: payments.Payment, deliveries: int) -> list[bool]:
        order = {
            "investment_id": payment.investment_id,
            "user_id": payment.user_id,
            "tokenization_id": payment.tokenization_id,
            "tokens": str(payment.tokens),
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "provider_reference": payment.reference,
        }
        url = f"{self.base_url}/investments"
        async with self.session.post(url, json=order, headers=self.auth) as resp:
            if resp.status not in (200, 201):
                raise RuntimeError(f"checkout answered {resp.status}: {await resp.text()}")
        body = provider.charge_success(
            payment.reference, payment.amount_minor, currency=payment.currency, domain=self.mode
        )
        # Replays race the original: Paystack retries a slow answer while it is running.
        answers = await asyncio.gather(*(self.provider.deliver(body) for _ in range(deliveries)))
        if any(status != 200 for status, _ in answers):
            raise RuntimeError(f"webhook answered {[status for status, _ in answers]}")
        return ['"confirmed"' in text for _, text in answers]


class Simulator:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        tokenization_id: str,
        property_id: str,
        channel: Channel | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.tokenization_id = tokenization_id
        self.property_id = property_id
        self.channel = channel or Direct(pool)
        self.tally = Tally()

    async def run(self, plan: Plan, stop: asyncio.Event) -> Tally:
        rng = random.Random(plan.seed)  # noqa: S311 -- a reproducible simulation, not secrets
        await kafka.ensure_topics(self.settings)
        await self._register_users(plan)
        producer = await kafka.start(kafka.producer(self.settings))
        try:
            i = 0
            while (plan.count == 0 or i < plan.count) and not stop.is_set():
                await self._pay(plan, rng, i, producer)
                i += 1
                await asyncio.sleep(rng.expovariate(plan.rate))
        finally:
            await producer.stop()
        return self.tally

    async def _register_users(self, plan: Plan) -> None:
        async with self.pool.acquire() as conn:
            for u in range(plan.users):
                pending = plan.kyc_pending(u)
                if pending:
                    self.tally.unverified_users.add(f"investor-{u}")
                await payments.register_user(
                    conn,
                    f"investor-{u}",
                    demo_wallet(plan.seed, u),
                    "pending" if pending else "approved",
                )

    async def _pay(
        self, plan: Plan, rng: random.Random, i: int, producer: AIOKafkaProducer
    ) -> None:
        u = rng.randrange(plan.users)
        payment = payments.Payment(
            user_id=f"investor-{u}",
            investment_id=f"inv-{plan.seed}-{i}",
            tokenization_id=self.tokenization_id,
            property_id=self.property_id,
            tokens=rng.randrange(1, 500) * 10**18,
            amount_minor=rng.randrange(5_000, 5_000_000) * 100,  # kobo
            reference=f"PSK-{plan.seed}-{i:06d}",
            wallet_address=demo_wallet(plan.seed, u),
        )
        deliveries = 2 if plan.duplicate_every and i % plan.duplicate_every == 0 else 1
        for created in await self.channel.pay(payment, deliveries):
            if created:
                self.tally.confirmed += 1
                self.tally.tokens += payment.tokens
            else:
                self.tally.duplicates += 1
        if plan.invalid_every and i % plan.invalid_every == plan.invalid_every - 1:
            garbage = GARBAGE[rng.randrange(len(GARBAGE))]
            await kafka.send(producer, self.settings.topic, kafka.Message(b"broken", garbage, []))
            self.tally.invalid += 1
