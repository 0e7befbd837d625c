"""The outbox relay: one leader publishes unpublished rows to Kafka, in order.

Leadership is a PostgreSQL advisory lock held by the relay's own session: when the
leader dies its session ends and a standby's next ``pg_try_advisory_lock`` succeeds. All
of the leader's work runs on that same connection, so a leader that lost its session
also lost the means to mark anything published.

A batch is claimed (``FOR UPDATE SKIP LOCKED``, in ``seq`` order), published with an
idempotent producer and marked published in one transaction, only after the broker
acknowledged every message. A failure anywhere rolls the batch back; it is published
again whole, so duplicates are possible (same event id) and loss is not. Unpublished rows
are claimed by state, never by "last published id", so a row whose transaction commits
late is still picked up.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

from tokendist.core import db, kafka, metrics
from tokendist.core.errors import BrokerUnavailable, TransientError
from tokendist.core.retry import backoff
from tokendist.core.settings import RelaySettings
from tokendist.core.signals import pause
from tokendist.outbox import queries

log = structlog.get_logger("tokendist.relay")

LEADER_LOCK = 7_117_002
NOTIFY_CHANNEL = "tokendist_outbox"
PRUNE_EVERY_S = 60.0
# aiokafka retries a batch whose leader is known but unreachable forever; without a bound
# a broker outage holds the claimed rows, the leader lock and SIGTERM hostage (seed 3159).
ACK_TIMEOUT_S = 30.0


class RelayState(enum.Enum):
    NEW = "new"
    STANDBY = "standby"
    LEADING = "leading"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Relay:
    def __init__(self, settings: RelaySettings, stop: asyncio.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.state = RelayState.NEW
        self.published = 0
        self._wake = asyncio.Event()

    async def run(self) -> None:
        if self.state is not RelayState.NEW:
            raise RuntimeError(f"relay already {self.state.value}")
        server = self._serve_metrics()
        try:
            await self._run()
        finally:
            if server is not None:
                server.cancel()
                await asyncio.gather(server, return_exceptions=True)
        self.state = RelayState.STOPPED
        log.info("relay_stopped", published=self.published)

    def _serve_metrics(self) -> asyncio.Task[None] | None:
        if self.settings.metrics_port is None:
            return None
        ready = {RelayState.STANDBY, RelayState.LEADING}
        return asyncio.create_task(
            metrics.serve(self.settings.metrics_port, lambda: self.state in ready),
            name="metrics",
        )

    async def _run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            self.state = RelayState.STANDBY
            try:
                await self._lead_when_possible()
                failures = 0
            except TransientError as exc:
                failures += 1
                delay = backoff(failures, self.settings.retry_base_s, self.settings.retry_cap_s)
                log.warning("relay_retrying", error=str(exc), delay_s=round(delay, 2))
                await pause(self.stop, delay)

    async def _lead_when_possible(self) -> None:
        async with db.connect(self.settings.database_url) as conn:
            session = db.Database(conn)
            while not self.stop.is_set():
                if await session.fetchval(queries.TRY_LEADER_LOCK, LEADER_LOCK):
                    break
                await pause(self.stop, self.settings.relay_standby_retry_s)
            else:
                return
            self.state = RelayState.LEADING
            metrics.RELAY_LEADER.set(1)
            log.info("relay_leading")
            async with session.connection() as listening:
                await listening.add_listener(NOTIFY_CHANNEL, self._on_notify)
            # Every leadership term re-checks the topics: a broker that lost a young
            # topic (or an operator who deleted it) must not leave the relay stuck.
            await kafka.ensure_topics(self.settings)
            producer = await kafka.start(kafka.producer(self.settings))
            try:
                await self._publish_loop(session, producer)
            finally:
                self.state = RelayState.STOPPING
                metrics.RELAY_LEADER.set(0)
                await kafka.close(producer)

    async def _publish_loop(self, session: db.Database, producer: AIOKafkaProducer) -> None:
        pruned_at = 0.0
        while not self.stop.is_set():
            self._wake.clear()
            # Measured before the claim: during a broker outage every attempt re-measures a
            # growing age, which is what the backlog alert watches.
            oldest = await session.fetchval(queries.OLDEST_UNPUBLISHED_AGE)
            metrics.OUTBOX_OLDEST.set(oldest or 0.0)
            count = await self._publish_batch(session, producer)
            if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                await session.execute(queries.PRUNE_PUBLISHED, self.settings.relay_retention_s)
                pruned_at = time.monotonic()
            if count < self.settings.relay_batch_size:
                # Idle: sleep until a NOTIFY, the poll interval (a missed NOTIFY) or stop.
                await self._wait_for_work()

    async def _publish_batch(self, session: db.Database, producer: AIOKafkaProducer) -> int:
        async with session.transaction() as conn:
            rows = await conn.fetch(queries.CLAIM_BATCH, self.settings.relay_batch_size)
            if rows:
                await self._send_all(producer, rows)
                await conn.execute(queries.MARK_PUBLISHED, [r["id"] for r in rows])
        count = len(rows)
        if count:
            metrics.RELAY_PUBLISHED.inc(count)
            self.published += count
            log.info("outbox_batch_published", rows=count, total=self.published)
        return count

    async def _send_all(self, producer: AIOKafkaProducer, rows: list[asyncpg.Record]) -> None:
        messages = [
            kafka.Message(
                key=row["aggregateid"].encode(),
                value=row["payload"].encode(),
                headers=_headers(row["headers"]),
            )
            for row in rows
        ]
        # Abandoning the wait rolls the claim back: the rows are published again later, and
        # whatever did reach the topic meanwhile is a duplicate the consumer already ignores.
        sending = asyncio.ensure_future(kafka.send_batch(producer, self.settings.topic, messages))
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait(
                {sending, stopping}, timeout=ACK_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
        if not sending.done():
            sending.cancel()
            why = "stop requested" if self.stop.is_set() else f"no ack in {ACK_TIMEOUT_S:g}s"
            raise BrokerUnavailable(f"publishing {len(rows)} rows abandoned: {why}")
        sending.result()

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _wait_for_work(self) -> None:
        waiters = {
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self.stop.wait()),
        }
        try:
            await asyncio.wait(
                waiters,
                timeout=self.settings.relay_poll_interval_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in waiters:
                waiter.cancel()


def _headers(raw: str) -> kafka.Headers:
    return [(key, str(value).encode()) for key, value in json.loads(raw).items()]
