"""CDC mode's bookkeeping: mark published the outbox rows Debezium has handed to Kafka.

Under Debezium CDC no relay runs, so nothing sets ``published_at``; yet ``tokendist
status``, ``verify``'s liveness check and the prune all read it. A row is in Kafka once the
connector's replication slot has confirmed a WAL position past the row's commit: Debezium
confirms a position to the server only after Kafka Connect committed the offsets of every
record before it, which Connect does only once the broker acknowledged those records.

No row carries its commit position, so a sweep reads the unpublished rows and the WAL
insert position in one statement (each row that statement sees committed before that
position), waits until the slot has confirmed the position (the connector's heartbeats
move it on when the outbox is quiet), then marks exactly those rows, and prunes as the
relay does. The marks and deletes are not events: the connector skips updates and deletes.
A slot that existed before the position was read cannot pass it before its first snapshot
is done: Debezium confirms nothing to the server until it streams.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import structlog

from tokendist.core import db
from tokendist.core.errors import BrokerUnavailable, InvalidInput
from tokendist.outbox import queries

log = structlog.get_logger("tokendist.cdc")

POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class Sweep:
    marked: int  # rows the connector had confirmed, now published
    pruned: int  # published rows older than the retention, deleted


async def sweep(session: db.Database, slot: str, *, timeout_s: float, retention_s: float) -> Sweep:
    """Mark published every row unpublished now, once ``slot`` has confirmed them.

    ``InvalidInput`` when this database has no logical slot ``slot``; ``BrokerUnavailable``
    when the slot has not moved past them within ``timeout_s`` (the connector is down or
    cannot reach Kafka: nothing is marked, the next sweep tries again).
    """
    # The slot must exist before the position is read: a slot created later starts at a
    # point past it, and would "confirm" rows its first snapshot has not sent yet.
    await _confirmed(session, slot, "0/0")
    row = await session.fetchrow(queries.CDC_UNPUBLISHED_AND_POSITION)
    assert row is not None  # an aggregate always returns one row
    ids: list[uuid.UUID] = list(row["ids"])
    position: str = row["position"]
    deadline = time.monotonic() + timeout_s
    while not await _confirmed(session, slot, position):
        if time.monotonic() > deadline:
            raise BrokerUnavailable(
                f"replication slot {slot} has not confirmed WAL position {position} within "
                f"{timeout_s:g}s; is the Debezium connector running?"
            )
        await asyncio.sleep(POLL_S)
    marked = _count(await session.execute(queries.CDC_MARK_PUBLISHED, ids)) if ids else 0
    pruned = _count(await session.execute(queries.PRUNE_PUBLISHED, retention_s))
    log.info("cdc_swept", slot=slot, position=position, marked=marked, pruned=pruned)
    return Sweep(marked=marked, pruned=pruned)


async def _confirmed(session: db.Database, slot: str, position: str) -> bool:
    row = await session.fetchrow(queries.CDC_SLOT_CONFIRMED, slot, position)
    if row is None:
        raise InvalidInput(f"this database has no logical replication slot named {slot}")
    # NULL: the slot exists but has never confirmed anything yet.
    return bool(row["passed"])


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])
