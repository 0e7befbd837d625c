"""The consumer's PostgreSQL work, without Kafka or a node, in two figures:

- **the consumer's path**: its own ``Processor.handle`` per event (validate, claim, KYC),
  its own ``Gatherer`` (batches of ``batch_max_size``, a key from its ``KeyPool``) and
  ``Settler`` (broadcast, receipt, outcome, one credit per batch), through its own
  ``PartitionWorker`` per partition, its pool size: every ``Repository`` call of the happy
  path in its order. The node is ``InstantChain``: it answers at once, a receipt paying
  every payment of a batch on the first look; signing is real (a local key).
- **the batch path alone**: rows already claimed, then ``Repository.sign_batch`` (a local
  signer), ``batch_submitted``, ``batch_confirmed`` and ``credit`` per batch; batches
  signed one after another (as the gatherer does), settled concurrently (as the settler
  does). Its gap to the first figure is the per-event intake's cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from eth_typing import HexStr
from pydantic import SecretStr

from tokendist.bench import sandbox, workload
from tokendist.bench.results import Rate
from tokendist.consumer import contracts
from tokendist.consumer.batching import indices
from tokendist.consumer.batching.gatherer import Gatherer
from tokendist.consumer.batching.settler import Settler
from tokendist.consumer.chain import Block, Chain, Receipt, SendResult, Signed
from tokendist.consumer.keypool import KeyPool
from tokendist.consumer.partition import PartitionWorker
from tokendist.consumer.processor import Outcome, Processor
from tokendist.consumer.repository import (
    BatchOutcome,
    BatchRequest,
    PaymentToSign,
    Repository,
)
from tokendist.consumer.wiring import POOL_SIZE
from tokendist.core import db
from tokendist.core.failpoints import Failpoints
from tokendist.core.settings import ConsumerSettings, Settings
from tokendist.custody import LocalSigner
from tokendist.ops import queries as tool_queries
from tokendist.ops.deploy import Deployment
from tokendist.schemas import parse_event

CHAIN_ID = 31_337  # any id: nothing here talks to a node
NOWHERE = "http://127.0.0.1:9"  # InstantChain's web3 client is never used
GAS = 6_000_000
FEE_WEI = 10**9
# Above what can be in flight here, so the in-flight cap (a chain policy) never waits.
UNCAPPED_INFLIGHT = 64
# The relay publishes exactly this text (JSONB, re-rendered by PostgreSQL).
OUTBOX_PAYLOADS = "SELECT payload FROM outbox ORDER BY seq"
DISTRIBUTOR = "0x" + "22" * 20


@dataclass(frozen=True, slots=True)
class Record:
    """The fields of an aiokafka ``ConsumerRecord`` that ``Processor.handle`` reads."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


class InstantChain(Chain):
    """The consumer's ``Chain`` with every node call answered at once and signing kept
    (a local key): a new block at every look, each sent batch mined in it, paying all
    its payments. Its own, not the unit tests' fake: the benchmark ships in the package
    and never imports ``tests``, and it wants the cheapest answers, not failures."""

    def __init__(self, key: SecretStr) -> None:
        super().__init__(NOWHERE, LocalSigner(key))
        self._chain_id = CHAIN_ID
        self._head = 0
        self._calldata: dict[str, HexStr] = {}

    async def nonce_of(self, address: str, *, pending: bool) -> int:
        return 0  # a fresh key: the database's nonce is the truth

    async def latest(self) -> Block:
        self._head += 1
        return Block(self._head, FEE_WEI)

    async def block_number(self) -> int:
        return self._head

    async def block_hash(self, number: int) -> str | None:
        return ""  # no reorganisation here: every block is canonical, as its receipts say

    async def gas_balance(self) -> int:
        return 10**18

    async def estimate(self, to: str, data: HexStr) -> int:
        return GAS

    async def sign(
        self, *, to: str, data: HexStr, gas: int, nonce: int, max_fee: int, priority_fee: int
    ) -> Signed:
        signed = await super().sign(
            to=to, data=data, gas=gas, nonce=nonce, max_fee=max_fee, priority_fee=priority_fee
        )
        self._calldata[signed.tx_hash] = data
        return signed

    async def send_raw(self, raw: bytes) -> SendResult:
        return SendResult.ACCEPTED

    async def receipts(self, tx_hashes: list[str]) -> dict[str, Receipt | None]:
        return {h: Receipt(h, self._head, True, _paid_logs(self._calldata[h])) for h in tx_hashes}

    async def distributed_logs(
        self, distributor: str, from_block: int = 0, to_block: int | None = None
    ) -> list[dict[str, Any]]:
        return []

    async def payment_logs(self, distributor: str, payment_id: str) -> list[dict[str, Any]]:
        return []


def _paid_logs(data: HexStr) -> tuple[dict[str, Any], ...]:
    """The ``Distributed`` log of every payment of a batch, as a receipt carries them."""
    first, payments = contracts.decode_batch_calldata(data)
    return tuple(
        {
            "topics": [contracts.DISTRIBUTED_TOPIC, "0x" + pid.hex()],
            "data": "0x" + (first + i).to_bytes(32, "big").hex(),
        }
        for i, (pid, _, _) in enumerate(payments)
    )


class RefuseToPark:
    """The dead-letter port of a run whose events are all valid: parking one is a bug."""

    async def park(self, record: object, reason: str, detail: str) -> None:
        raise RuntimeError(f"consumer DB stage dead-lettered a record: {reason}: {detail}")


Timed = Callable[[], Awaitable[int]]
# Set-up (untimed), returning the timed part, which returns how many it credited.
Prepare = Callable[[ConsumerSettings, asyncpg.Pool, dict[int, list[Record]]], Awaitable[Timed]]


async def _measured(
    settings: Settings, events: int, users: int, writers: int, *, what: str, prepare: Prepare
) -> Rate:
    """``prepare``'s timed part over ``events`` confirmed payments, in a database of its own (its
    distributions have no transactions on-chain: ``verify`` must never see them)."""
    async with sandbox.isolated_database(settings.database_url) as url:
        pool = await db.create_pool(url, max_size=POOL_SIZE)
        try:
            records = await _records(pool, events, users, writers, settings.topic_partitions)
            consumer = settings.model_copy(
                update={"max_inflight_per_sender": UNCAPPED_INFLIGHT}
            ).consumer()
            timed = await prepare(consumer, pool, records)
            start = time.perf_counter()
            credited = await timed()
            seconds = time.perf_counter() - start
        finally:
            await pool.close()
    if credited != events:
        raise RuntimeError(f"consumer DB stage ({what}) credited {credited} of {events} events")
    return Rate.of(what, credited, seconds)


def _local_key() -> SecretStr:
    """A key that signs only here: nothing it signs is ever sent."""
    return SecretStr("0x" + os.urandom(32).hex())


async def consumer_path(settings: Settings, events: int, users: int, writers: int) -> Rate:
    """Credited events/s through the consumer's own classes (see the module's docstring)."""
    return await _measured(
        settings,
        events,
        users,
        writers,
        what="Processor.handle → gatherer → settler, stub node",
        prepare=_through_the_consumer,
    )


async def batch_path(settings: Settings, events: int, users: int, writers: int) -> Rate:
    """Credited payments/s of the batch path alone (see the module's docstring)."""
    return await _measured(
        settings,
        events,
        users,
        writers,
        what="sign_batch → submitted → confirmed → credit",
        prepare=_batches_only,
    )


async def _through_the_consumer(
    settings: ConsumerSettings, pool: asyncpg.Pool, records: dict[int, list[Record]]
) -> Timed:
    repo = Repository(pool)
    key = InstantChain(_local_key())
    keys = KeyPool([key], repo, cap=settings.max_inflight_per_sender, poll_s=0.001)
    await keys.register()
    await indices.rebuild(settings, repo, keys)
    failpoints = Failpoints("")
    settler = Settler(settings, repo, keys, failpoints)
    gatherer = Gatherer(settings, repo, keys, settler, failpoints)
    processor = Processor(
        settings, repo, key, dead_letters=RefuseToPark(), gatherer=gatherer, settler=settler
    )

    async def timed() -> int:
        signing = asyncio.create_task(gatherer.run(), name="gatherer")
        try:
            outcomes = await asyncio.gather(
                *(_partition(processor, part, settings) for part in records.values())
            )
        finally:
            signing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await signing
            await settler.close()
        return sum(o.count(Outcome.CREDITED) for o in outcomes)

    return timed


async def _batches_only(
    settings: ConsumerSettings, pool: asyncpg.Pool, records: dict[int, list[Record]]
) -> Timed:
    """Every row claimed first; then (timed) batches signed one after another, each
    settled in a task of its own."""
    repo = Repository(pool)
    key = InstantChain(_local_key())
    await repo.register_keys(CHAIN_ID, [key.sender])
    await repo.sync_nonce(CHAIN_ID, key.sender, 0)
    await repo.index_scan(DISTRIBUTOR)  # creates the index floor at 0
    payments = await _claimed(repo, [r for part in records.values() for r in part])
    size = settings.batch_max_size

    async def sign(nonce: int, first: int, kept: list[PaymentToSign]) -> tuple[Signed, bytes]:
        data = contracts.batch_calldata(first, [_entry(p) for p in kept])
        signed = await key.sign(
            to=DISTRIBUTOR, data=data, gas=GAS, nonce=nonce, max_fee=FEE_WEI, priority_fee=0
        )
        return signed, bytes.fromhex(data[2:])

    async def settle(batch_id: int) -> int:
        batch = await repo.batch_submitted(await repo.batch(batch_id))
        members = [m.event_id for m in await repo.batch_members(batch_id)]
        tx_hash = f"0x{batch_id:064x}"
        batch = await repo.batch_confirmed(batch, tx_hash, 1, BatchOutcome(members, {}, {}))
        return await repo.credit(members, batch)

    async def timed() -> int:
        settling = []
        for start in range(0, len(payments), size):
            batch = payments[start : start + size]
            stored = await repo.sign_batch(
                BatchRequest(CHAIN_ID, key.sender, DISTRIBUTOR, batch), sign
            )
            assert stored.batch_id is not None
            settling.append(asyncio.create_task(settle(stored.batch_id)))
        return sum(await asyncio.gather(*settling))

    return timed


async def _claimed(repo: Repository, records: list[Record]) -> list[PaymentToSign]:
    """Each record's row claimed, as the processor claims it (untimed set-up)."""
    payments = []
    for record in records:
        event = parse_event(record.value)
        data = event.data
        payment_id = "0x" + contracts.payment_id(data.investment_id).hex()
        await repo.claim(
            event_id=event.event_id,
            investment_id=data.investment_id,
            payment_id=payment_id,
            user_id=data.user_id,
            tokenization_id=data.tokenization_id,
            tokens=data.tokens,
            payload=event.model_dump_json(),
            partition=record.partition,
            offset=record.offset,
        )
        assert data.wallet_address is not None
        payments.append(PaymentToSign(event.event_id, payment_id, data.wallet_address, data.tokens))
    return payments


def _entry(payment: PaymentToSign) -> tuple[bytes, str, int]:
    return bytes.fromhex(payment.payment_id[2:]), payment.recipient, payment.tokens


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
        distributor_address=DISTRIBUTOR,
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
    processor: Processor, records: list[Record], settings: ConsumerSettings
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
