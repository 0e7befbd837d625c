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

from tokendist import custody
from tokendist.consumer.batching import indices
from tokendist.consumer.batching.gatherer import Gatherer
from tokendist.consumer.batching.settler import Settler
from tokendist.consumer.chain import Chain
from tokendist.consumer.dlq import DeadLetters
from tokendist.consumer.endpoints import Endpoints
from tokendist.consumer.gauges import Gauges, GaugeStore
from tokendist.consumer.keypool import KeyPool
from tokendist.consumer.processor import Processor
from tokendist.consumer.release import ParkedRows, Releaser
from tokendist.consumer.repository import Repository
from tokendist.consumer.resubmitter import Resubmitter
from tokendist.core import db, kafka
from tokendist.core.failpoints import Failpoints
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
    gatherer: Gatherer
    settler: Settler
    resubmitter: Resubmitter
    gauges: Gauges
    releaser: Releaser


async def build(
    settings: ConsumerSettings, stop: asyncio.Event, resources: AsyncExitStack
) -> Consumer:
    rpc_url = settings.require_rpc()
    s = settings
    # First: a key that cannot be opened (a wrong keystore password) stops the member
    # before it touches anything; an unreachable KMS is waited for like the database.
    signers = await until_available("signers", lambda: custody.operator_signers(s), s, stop)
    pool = await until_available(
        "database", lambda: db.create_pool(s.database_url, max_size=POOL_SIZE), s, stop
    )
    resources.push_async_callback(pool.close)
    rpc = Endpoints(settings.endpoints(rpc_url), settings)
    resources.push_async_callback(rpc.close)
    chains = [Chain(rpc, signer) for signer in signers]
    repo = Repository(pool)
    keys = KeyPool(chains, repo, cap=s.max_inflight_per_sender, poll_s=s.receipt_poll_s)
    await until_available("keys", keys.register, s, stop)
    custody.warn_if_raw(signers, await keys.node.chain_id())
    # Before any index is assigned: see consumer.batching.indices.
    await until_available("indices", lambda: indices.rebuild(s, repo, keys), s, stop)
    await until_available("topics", lambda: kafka.ensure_topics(s), s, stop)
    producer = await until_available("producer", lambda: kafka.start(kafka.producer(s)), s, stop)
    resources.push_async_callback(kafka.close, producer)
    dead_letters = DeadLetters(producer, settings.dlq_topic, repo)
    failpoints = Failpoints(settings.failpoints)
    settler = Settler(settings, repo, keys, failpoints)
    resources.push_async_callback(settler.close)
    gatherer = Gatherer(settings, repo, keys, settler, failpoints)
    return Consumer(
        repo=repo,
        dead_letters=dead_letters,
        processor=Processor(
            settings,
            repo,
            keys.node,
            dead_letters=dead_letters,
            gatherer=gatherer,
            settler=settler,
        ),
        gatherer=gatherer,
        settler=settler,
        resubmitter=Resubmitter(settings, repo, keys),
        gauges=Gauges(GaugeStore(pool), chains[0]),
        releaser=Releaser(ParkedRows(pool), chains[0], interval_s=s.parked_recheck_interval_s),
    )
