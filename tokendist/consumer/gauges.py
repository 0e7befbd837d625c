"""Figures no event handler sees change, read every ``interval_s`` for the metrics:

- payments parked before signing: how many, by reason, and how long the oldest waited;
- batches mined but not final: how many, and how long the oldest has waited;
- per tokenization of this chain: its Distributor's token balance (one ``balanceOf``) and
  the tokens of the payments received in the last hour, the next hour's expected need.

A side task of the consumer. A read that fails for an outage (PostgreSQL or the node) is
logged and tried again next tick; the last figures stay exported meanwhile, which is what
an alert should keep seeing. Anything else is a bug and stops the consumer loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NoReturn, Protocol

import asyncpg
import structlog

from tokendist.consumer import queries
from tokendist.consumer.compliance import RefusalReason
from tokendist.core import db, metrics, periodic

log = structlog.get_logger("tokendist.gauges")

# Alerts on these hold for minutes; reading more often would only load the database.
INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class Waiting:
    """Rows in one state: how many, and how long the oldest has been in it."""

    count: int
    oldest_s: float


@dataclass(frozen=True, slots=True)
class Parked(Waiting):
    """Payments parked before signing, and how many for each reason."""

    by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenNeed:
    tokenization_id: str
    token_address: str
    distributor_address: str
    received: int  # tokens of the payments received in the last hour


class GaugeReads(Protocol):
    async def parked(self) -> Parked: ...

    async def token_needs(self, chain_id: int) -> list[TokenNeed]: ...

    async def mined_not_final(self) -> Waiting: ...


class TokenBalances(Protocol):
    async def chain_id(self) -> int: ...

    async def token_balance(self, token: str, holder: str) -> int: ...


class GaugeStore:
    """The PostgreSQL reads behind the gauges."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._db = db.Database(pool)

    async def parked(self) -> Parked:
        row = await self._db.fetchrow(queries.PARKED_PAYMENTS)
        assert row is not None  # an aggregate always answers one row
        reasons = await self._db.fetch(queries.PARKED_BY_REASON)
        by_reason = {r["reason"]: int(r["parked"]) for r in reasons}
        return Parked(int(row["parked"]), float(row["oldest_s"]), by_reason)

    async def mined_not_final(self) -> Waiting:
        row = await self._db.fetchrow(queries.MINED_NOT_FINAL)
        assert row is not None  # an aggregate always answers one row
        return Waiting(int(row["mined"]), float(row["oldest_s"]))

    async def token_needs(self, chain_id: int) -> list[TokenNeed]:
        rows = await self._db.fetch(queries.TOKENS_RECEIVED_LAST_HOUR, chain_id)
        return [
            TokenNeed(
                r["tokenization_id"],
                r["token_address"],
                r["distributor_address"],
                int(r["received"]),
            )
            for r in rows
        ]


class Gauges:
    def __init__(
        self, store: GaugeReads, chain: TokenBalances, *, interval_s: float = INTERVAL_S
    ) -> None:
        self.store = store
        self.chain = chain
        self.interval_s = interval_s

    async def run(self) -> NoReturn:
        await periodic.every(self.interval_s, self.tick, log, "gauges_read_failed")

    async def tick(self) -> None:
        """Read every figure once and export it."""
        parked = await self.store.parked()
        metrics.PARKED.set(parked.count)
        metrics.PARKED_OLDEST.set(parked.oldest_s)
        mined = await self.store.mined_not_final()
        metrics.MINED_NOT_FINAL.set(mined.count)
        metrics.MINED_NOT_FINAL_OLDEST.set(mined.oldest_s)
        for reason in RefusalReason:  # each reason's series, 0 once its last one leaves
            metrics.PARKED_BY_REASON.labels(reason=reason).set(parked.by_reason.get(reason, 0))
        for need in await self.store.token_needs(await self.chain.chain_id()):
            balance = await self.chain.token_balance(need.token_address, need.distributor_address)
            metrics.DISTRIBUTOR_TOKENS.labels(tokenization=need.tokenization_id).set(balance)
            metrics.TOKENS_RECEIVED_HOUR.labels(tokenization=need.tokenization_id).set(
                need.received
            )
