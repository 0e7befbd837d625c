"""Each stage of the pipeline on its own, with the code the pipeline uses for it.

These are the ceilings: the pipeline cannot go faster than its slowest stage, and the
gap between a ceiling and the end-to-end figure is time spent waiting (on blocks, on the
in-flight cap, on polls), not working.
"""

from __future__ import annotations

import asyncio
import time

from eth_typing import HexStr

from tokendist.bench import workload
from tokendist.bench.results import BlockInterval, Rate
from tokendist.bench.sandbox import address_of, funded_key, warmed_topic
from tokendist.consumer import contracts
from tokendist.consumer.chain import Chain
from tokendist.consumer.runner import FETCH_MAX_RECORDS, FETCH_OPTIONS, FETCH_TIMEOUT_MS
from tokendist.core import kafka
from tokendist.core.settings import Settings
from tokendist.custody import LocalSigner

SIMPLE_TRANSFER_GAS = 21_000


async def kafka_produce(settings: Settings, count: int, payload: bytes) -> Rate:
    """The relay's send pattern without PostgreSQL: a batch of sends, then every ack.

    Uses ``tokendist.core.kafka.producer`` (idempotent, acks=all) and the relay's batch size,
    so the figure is the relay's Kafka ceiling.
    """
    await warmed_topic(settings)
    producer = kafka.producer(settings)
    await producer.start()
    try:
        batch = settings.relay_batch_size
        start = time.perf_counter()
        for first in range(0, count, batch):
            acks = [
                await producer.send(settings.topic, value=payload, key=f"user-{i % 200}".encode())
                for i in range(first, min(first + batch, count))
            ]
            await asyncio.gather(*acks)
        seconds = time.perf_counter() - start
    finally:
        await producer.stop()
    return Rate.of("produce+ack, idempotent producer", count, seconds)


async def kafka_consume(settings: Settings, payload_bytes: int) -> Rate:
    """Everything in the settings' topic (what ``kafka_produce`` wrote), read back with
    ``getmany`` as the consumer's fetch loop reads, without processing anything.

    The consumer's own fetch options. Partitions are assigned, not joined through the
    group: joining is start-up, and the clock starts after it, at the first fetch.
    """
    consumer = kafka.consumer(settings, **FETCH_OPTIONS)
    await kafka.start(consumer)
    try:
        tps = await kafka.partitions(consumer, settings.topic)
        consumer.assign(tps)
        total = sum((await consumer.end_offsets(tps)).values())
        seen = 0
        start = time.perf_counter()
        while seen < total:
            batches = await consumer.getmany(
                timeout_ms=FETCH_TIMEOUT_MS, max_records=FETCH_MAX_RECORDS
            )
            seen += sum(len(records) for records in batches.values())
        seconds = time.perf_counter() - start
    finally:
        await kafka.close(consumer)
    return Rate.of(f"aiokafka getmany, {payload_bytes} B events, no processing", seen, seconds)


async def chain_cpu(settings: Settings, payments: int) -> tuple[Rate, Rate]:
    """ABI-encoding ``distributeBatch`` calldata and signing it: the CPU a consumer spends
    per batch, with the consumer's own encoder and ``Chain`` (eth-account; coincurve
    underneath). Both in payments/s, batches of ``batch_max_size``."""
    rpc_url, key = settings.require_chain()
    chain = Chain(rpc_url, LocalSigner(key))
    size = settings.batch_max_size
    batches = max(1, payments // size)
    try:
        await chain.chain_id()  # sign() needs it cached; the only network call here
        wallets = workload.make_wallets(size)
        entries = [(i.to_bytes(32, "big"), w, 10**18 + i) for i, w in enumerate(wallets)]
        start = time.perf_counter()
        calldata = [contracts.batch_calldata(b * size, entries) for b in range(batches)]
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        for nonce, data in enumerate(calldata):
            await chain.sign(
                to=chain.sender,
                data=data,
                gas=10_000_000,
                nonce=nonce,
                max_fee=10**10,
                priority_fee=10**9,
            )
        sign_s = time.perf_counter() - start
    finally:
        await chain.close()
    count = batches * size
    return Rate.of(
        f"ABI-encode distributeBatch calldata ({size} a batch)", count, encode_s
    ), Rate.of("Chain.sign a batch (eth-account + coincurve), per payment", count, sign_s)


async def rpc_block_number(settings: Settings, count: int) -> Rate:
    """The cheapest round trip: what the node's HTTP path costs with nothing else in it."""
    rpc_url, key = settings.require_chain()
    chain = Chain(rpc_url, LocalSigner(key))
    try:
        await chain.block_number()  # open the HTTP session before the clock starts
        start = time.perf_counter()
        for _ in range(count):
            await chain.block_number()
        seconds = time.perf_counter() - start
    finally:
        await chain.close()
    return Rate.of("eth_blockNumber round trips", count, seconds)


async def rpc_send_raw(settings: Settings, count: int) -> Rate:
    """eth_sendRawTransaction round trips, one after another as a consumer worker does.

    From a key of its own (zero-value self transfers), never the operator's: the
    consumers' nonce bookkeeping must see only the consumers' transactions.
    """
    rpc_url, _ = settings.require_chain()
    key = await funded_key(rpc_url)
    chain = Chain(rpc_url, LocalSigner(key))
    try:
        await chain.chain_id()
        first_nonce = await chain.nonce(pending=True)
        tip = settings.priority_fee_wei
        max_fee = min(2 * await chain.base_fee() + tip, settings.max_fee_wei)
        me = address_of(key)
        raws = [
            (
                await chain.sign(
                    to=me,
                    data=HexStr("0x"),
                    gas=SIMPLE_TRANSFER_GAS,
                    nonce=first_nonce + i,
                    max_fee=max_fee,
                    priority_fee=tip,
                )
            ).raw
            for i in range(count)
        ]
        start = time.perf_counter()
        for raw in raws:
            await chain.send_raw(raw)
        seconds = time.perf_counter() - start
    finally:
        await chain.close()
    return Rate.of("eth_sendRawTransaction round trips", count, seconds)


async def block_interval(settings: Settings, seconds: float) -> BlockInterval:
    """Wall-clock time between new heads, seen by polling eth_blockNumber.

    Block timestamps cannot be used: anvil stamps whole seconds. Timing from the first
    observed change to the last one removes the unknown phase at the start.
    """
    rpc_url, key = settings.require_chain()
    chain = Chain(rpc_url, LocalSigner(key))
    changes: list[tuple[float, int]] = []
    try:
        last = await chain.block_number()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            head = await chain.block_number()
            if head != last:
                changes.append((time.perf_counter(), head))
                last = head
            await asyncio.sleep(0.01)
    finally:
        await chain.close()
    if len(changes) < 2:
        return BlockInterval(blocks=len(changes), seconds=seconds, interval_ms=0)
    (t0, n0), (t1, n1) = changes[0], changes[-1]
    return BlockInterval(
        blocks=n1 - n0, seconds=t1 - t0, interval_ms=int((t1 - t0) * 1000 / (n1 - n0))
    )
