"""The consumer's PostgreSQL work per event, without Kafka or the chain.

The consumer's own ``Processor`` handles each event (so the database work is exactly
the consumer's: every ``Repository`` call of the happy path, in its order, from claim to
credit) against a stub chain that answers at once: a fixed gas estimate and fee, a fake
signature (signing is the chain stage's CPU, not PostgreSQL's), a receipt on the first
poll. Records are handed over in memory instead of fetched from Kafka.

Concurrency as in one consumer process: the consumer's own ``PartitionWorker`` per
partition (its window of users at once, each user's events in order), sharing a pool of
the consumer's size.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from dataclasses import dataclass

import asyncpg
from eth_typing import HexStr

from tokendist.bench import sandbox, workload
from tokendist.bench.results import Rate
from tokendist.consumer import contracts
from tokendist.consumer.chain import Block, Receipt, SendResult, Signed
from tokendist.consumer.partition import PartitionWorker
from tokendist.consumer.processor import Outcome, Processor
from tokendist.consumer.repository import Repository
from tokendist.consumer.wiring import POOL_SIZE
from tokendist.core import db
from tokendist.core.settings import Settings
from tokendist.ops import queries as tool_queries
from tokendist.ops.deploy import Deployment
from tokendist.schemas import parse_event

CHAIN_ID = 31_337  # any id: nothing here talks to a node
SENDER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # any address: nothing is sent
GAS = 100_000
FEE_WEI = 10**9
BLOCK = 1
# Above the concurrency here, so the in-flight cap (a chain policy) never waits.
UNCAPPED_INFLIGHT = 64
# The relay publishes exactly this text (JSONB, re-rendered by PostgreSQL).
OUTBOX_PAYLOADS = "SELECT payload FROM outbox ORDER BY seq"


@dataclass(frozen=True, slots=True)
class Record:
    """The fields of an aiokafka ``ConsumerRecord`` that ``Processor.handle`` reads."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


class InstantChain:
    """The chain port (``consumer.ports.OperatorChain``) answering at once, without a node
    or a key: encoding and signing are the chain stage's CPU, not PostgreSQL's.

    Its own, not the unit tests' fake: the benchmark ships in the package and never
    imports ``tests``, and it wants the cheapest answers, not scriptable failures."""

    sender = SENDER

    async def chain_id(self) -> int:
        return CHAIN_ID

    async def nonce(self, *, pending: bool) -> int:
        return 0

    async def latest(self) -> Block:
        return Block(BLOCK, FEE_WEI)

    async def base_fee(self) -> int:
        return FEE_WEI

    async def gas_balance(self) -> int:
        return 10**18

    def distribute_calldata(self, payment_id: bytes, to: str, amount: int) -> HexStr:
        # The ABI encoding of three static words, as long as the real calldata.
        selector, _ = contracts.function("Distributor", "distribute")
        words = payment_id + bytes.fromhex(to[2:]).rjust(32, b"\0") + amount.to_bytes(32)
        return HexStr("0x" + (selector + words).hex())

    async def estimate(self, to: str, data: HexStr) -> int:
        return GAS

    def sign(
        self, *, to: str, data: HexStr, gas: int, nonce: int, max_fee: int, priority_fee: int
    ) -> Signed:
        raw = f"{data}:{nonce}".encode()
        return Signed(
            "0x" + hashlib.sha256(raw).hexdigest(), raw, nonce, gas, max_fee, priority_fee
        )

    async def send_raw(self, raw: bytes) -> SendResult:
        return SendResult.ACCEPTED

    async def receipts(self, tx_hashes: list[str]) -> dict[str, Receipt | None]:
        return {h: Receipt(tx_hash=h, block_number=BLOCK, succeeded=True) for h in tx_hashes}


class RefuseToPark:
    """The dead-letter port of a run whose events are all valid: parking one is a bug."""

    async def park(self, record: object, reason: str, detail: str) -> None:
        raise RuntimeError(f"consumer DB stage dead-lettered a record: {reason}: {detail}")


async def run(settings: Settings, events: int, users: int, writers: int) -> Rate:
    """Events/s credited by one consumer's worth of workers, in a database of its own
    (its distributions have no transactions on-chain: ``verify`` must never see them)."""
    async with sandbox.isolated_database(settings.database_url) as url:
        pool = await db.create_pool(url, max_size=POOL_SIZE)
        try:
            records = await _records(pool, events, users, writers, settings.topic_partitions)
            repo = Repository(pool)
            await repo.sync_nonce(CHAIN_ID, SENDER, 0)
            processor = Processor(
                settings.model_copy(update={"max_inflight_per_sender": UNCAPPED_INFLIGHT}),
                repo,
                InstantChain(),
                RefuseToPark(),
            )
            start = time.perf_counter()
            outcomes = await asyncio.gather(
                *(_partition(processor, part, settings) for part in records.values())
            )
            seconds = time.perf_counter() - start
        finally:
            await pool.close()
    credited = sum(o.count(Outcome.CREDITED) for o in outcomes)
    if credited != events:
        raise RuntimeError(f"consumer DB stage credited {credited} of {events} events")
    return Rate.of("Processor.handle, stub chain: claim → credit", credited, seconds)


async def _records(
    pool: asyncpg.Pool, events: int, users: int, writers: int, partitions: int
) -> dict[int, list[Record]]:
    """Investors, a tokenization and ``events`` confirmed payments, written as the payment
    service writes them; returns the outbox's events as records, by partition (by user,
    as Kafka would key them, so each user's events stay in order)."""
    wallets = workload.make_wallets(users)
    await workload.register_users(pool, wallets)
    tk = Deployment(
        tokenization_id="bench-db",
        property_id="prop-bench-db",
        chain_id=CHAIN_ID,
        token_address="0x" + "11" * 20,
        distributor_address="0x" + "22" * 20,
        decimals=18,
        supply=0,
    )
    await pool.execute(
        tool_queries.RECORD_TOKENIZATION,
        tk.tokenization_id,
        tk.property_id,
        tk.chain_id,
        tk.token_address,
        tk.decimals,
        tk.distributor_address,
    )
    await workload.confirm_payments(pool, tk, "db", events, wallets, writers=writers, rate=0.0)
    by_partition: dict[int, list[Record]] = {}
    for row in await pool.fetch(OUTBOX_PAYLOADS):
        value = row["payload"].encode()
        key = parse_event(value).data.user_id.encode()
        partition = zlib.crc32(key) % partitions
        part = by_partition.setdefault(partition, [])
        part.append(Record("bench.db", partition, len(part), key, value))
    return by_partition


async def _partition(
    processor: Processor, records: list[Record], settings: Settings
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    all_done = asyncio.Event()

    async def process(record: Record) -> None:
        outcomes.append(await processor.handle(record))
        if len(outcomes) == len(records):
            all_done.set()

    worker = PartitionWorker(
        records[0].partition,
        process,
        park=processor.dead_letters.park,
        park_after=settings.park_after_errors,
        window=settings.partition_window,
        retry_base_s=settings.retry_base_s,
        retry_cap_s=settings.retry_cap_s,
    )
    worker.feed(records)
    await all_done.wait()
    await worker.stop(0)
    return outcomes
