"""The benchmark's load: investors and confirmed payments, written the way the payment
service writes them (one transaction per payment, enqueue inside it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
from eth_account import Account

from tokendist.core import db
from tokendist.ops.deploy import Deployment
from tokendist.outbox import enqueue
from tokendist.sim import payments

TOKEN_UNIT = 10**18


def make_wallets(n: int) -> list[str]:
    """Fresh addresses: balances on them come from this run alone (verify checks them)."""
    return [str(Account.create().address) for _ in range(n)]


async def register_users(pool: asyncpg.Pool, wallets: list[str]) -> None:
    async with pool.acquire() as conn:
        for u, wallet in enumerate(wallets):
            await payments.register_user(conn, user_id(u), wallet)


def user_id(u: int) -> str:
    return f"investor-{u}"


def payment(tk: Deployment | None, tag: str, i: int, wallets: list[str]) -> payments.Payment:
    """Payment ``i`` of run ``tag``, round-robin over the investors (each user id is a
    Kafka key, so users are what spread events over partitions)."""
    u = i % len(wallets)
    return payments.Payment(
        user_id=user_id(u),
        investment_id=f"{tag}-inv-{i}",
        tokenization_id=tk.tokenization_id if tk else "unconsumed",
        property_id=tk.property_id if tk else "unconsumed",
        tokens=TOKEN_UNIT + i,
        amount_minor=50_000 + i,
        reference=f"{tag}-ref-{i}",
        wallet_address=wallets[u],
    )


async def spread(
    pool: asyncpg.Pool,
    count: int,
    writers: int,
    write: Callable[[db.Connection, int], Awaitable[object]],
    rate: float = 0.0,
) -> float:
    """Call ``write(conn, i)`` for i in range(count) from ``writers`` concurrent
    connections (webhook handlers run concurrently too). ``rate`` > 0 paces the writes
    to that many per second overall; 0 writes as fast as PostgreSQL takes them.
    Returns the elapsed seconds."""
    start = time.perf_counter()

    async def writer(first: int) -> None:
        async with pool.acquire() as conn:
            for i in range(first, count, writers):
                if rate > 0:
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await write(conn, i)

    await asyncio.gather(*(writer(w) for w in range(writers)))
    return time.perf_counter() - start


async def confirm_payments(
    pool: asyncpg.Pool,
    tk: Deployment,
    tag: str,
    count: int,
    wallets: list[str],
    *,
    writers: int,
    rate: float,
) -> float:
    """The payment service confirming ``count`` payments (investment row + outbox row)."""

    async def write(conn: db.Connection, i: int) -> None:
        await payments.confirm(conn, payment(tk, tag, i, wallets))

    return await spread(pool, count, writers, write, rate)


async def enqueue_events(pool: asyncpg.Pool, count: int, writers: int) -> float:
    """``count`` bare ``outbox.enqueue`` transactions, for the relay to publish.

    The events are built before the clock starts: the figure is PostgreSQL's, not
    pydantic's. Their tokenization exists nowhere: these events are only ever published.
    """
    wallets = make_wallets(1)
    events = [payment(None, "relay", i, wallets).event() for i in range(count)]

    async def write(conn: db.Connection, i: int) -> None:
        async with conn.transaction():
            await enqueue(conn, events[i])

    return await spread(pool, count, writers, write)
