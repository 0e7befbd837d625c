"""The consumer's composition root: the one place that builds the real adapters and
plugs them into the state machine's ports (``consumer.ports``).

Each resource is opened once its dependency is reachable (waiting through an outage,
until ``stop``), and its close is pushed onto the caller's exit stack as it opens: the
stack closes them in reverse order of opening (producer, chain client, pool).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass

import structlog

from tokendist.consumer.chain import Chain
from tokendist.consumer.dlq import DeadLetters
from tokendist.consumer.processor import Processor
from tokendist.consumer.repository import Repository
from tokendist.consumer.resubmitter import Resubmitter
from tokendist.core import db, kafka
from tokendist.core.retry import until_available
from tokendist.core.settings import ConsumerSettings

log = structlog.get_logger("tokendist.consumer")

POOL_SIZE = 20


@dataclass(frozen=True, slots=True)
class Consumer:
    """What a consumer group member runs, wired to the real services."""

    repo: Repository
    dead_letters: DeadLetters
    processor: Processor
    resubmitter: Resubmitter


async def build(
    settings: ConsumerSettings, stop: asyncio.Event, resources: AsyncExitStack
) -> Consumer:
    rpc_url, key = settings.require_chain()
    s = settings
    pool = await until_available(
        "database", lambda: db.create_pool(s.database_url, max_size=POOL_SIZE), s, stop
    )
    resources.push_async_callback(pool.close)
    chain = Chain(rpc_url, key)
    resources.push_async_callback(chain.close)
    repo = Repository(pool)
    await until_available("nonce", lambda: sync_nonce(repo, chain), s, stop)
    await until_available("topics", lambda: kafka.ensure_topics(s), s, stop)
    producer = await until_available("producer", lambda: kafka.start(kafka.producer(s)), s, stop)
    resources.push_async_callback(kafka.close, producer)
    dead_letters = DeadLetters(producer, settings.dlq_topic, repo)
    return Consumer(
        repo=repo,
        dead_letters=dead_letters,
        processor=Processor(settings, repo, chain, dead_letters),
        resubmitter=Resubmitter(settings, repo, chain),
    )


async def sync_nonce(repo: Repository, chain: Chain) -> None:
    chain_id = await chain.chain_id()
    pending = await chain.nonce(pending=True)
    next_nonce = await repo.sync_nonce(chain_id, chain.sender, pending)
    log.info(
        "nonce_synchronised", sender=chain.sender, chain_pending=pending, next_nonce=next_nonce
    )
