"""``tokendist chain-check``: a reorganisation deeper than the finality rule removes payouts
the consumer already credited, and nothing else would ever look at them again. Every
``chain_check_interval_s`` this compares the credited distributions with the chain's
``Distributed`` logs; one whose payment id has no log any more is reported (gauge
``tokendist_credited_not_on_chain``, counter ``tokendist_deep_reorgs_total``, log
``credited_distribution_missing`` with ``alert=True``) until ``tokendist reconcile`` puts
its payout back.

Incremental, so a check costs the same after a year as on the first day: it reads the
distributions credited in the last ``chain_check_window_blocks`` blocks below the previous
check's head, those credited since the previous check began (whatever their block), and
those already found missing; and one ``eth_getLogs`` per Distributor from the lowest of
their blocks to the head. A reorganisation deeper than the window is not seen (``verify``
reads the whole history). Checkers take turns through an advisory lock: several may run.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import asyncpg
import structlog
from web3 import AsyncWeb3

from tokendist.consumer import contracts
from tokendist.consumer.endpoints import Endpoints
from tokendist.core import metrics
from tokendist.core.errors import TransientError
from tokendist.core.settings import ChainCheckSettings
from tokendist.ops.repository import ToolRepository

log = structlog.get_logger("tokendist.chain_check")

# A credit's transaction stamps credited_at when it begins and may commit after a check
# read the table: the next check reads credits from this long before the last one began.
CREDIT_SLACK = timedelta(minutes=5)


class LogReader(Protocol):
    async def chain_id(self) -> int: ...

    async def block_number(self) -> int: ...

    async def distributed_logs(
        self, distributor: str, from_block: int, to_block: int
    ) -> list[dict[str, Any]]: ...


class NodeReader:
    """What a check reads, through the RPC endpoints as the consumer reads them
    (``TOKENDIST_RPC_URL`` then ``TOKENDIST_RPC_URLS``: failover, backoff, lag; errors
    mapped): an outage is one ``ChainUnavailable``. No key: a check signs nothing."""

    def __init__(self, rpc: Endpoints) -> None:
        self.rpc = rpc

    async def chain_id(self) -> int:
        return int(await self.rpc.read(lambda w3: w3.eth.chain_id))

    async def block_number(self) -> int:
        return int(await self.rpc.read(lambda w3: w3.eth.block_number))

    async def distributed_logs(
        self, distributor: str, from_block: int, to_block: int
    ) -> list[dict[str, Any]]:
        params: Any = {
            "address": AsyncWeb3.to_checksum_address(distributor),
            "fromBlock": from_block,
            "toBlock": to_block,
            "topics": [contracts.DISTRIBUTED_TOPIC],
        }
        return [dict(entry) for entry in await self.rpc.read(lambda w3: w3.eth.get_logs(params))]


@dataclass(frozen=True, slots=True)
class Missing:
    """A credited distribution whose payment has no ``Distributed`` log on the chain."""

    event_id: uuid.UUID
    user_id: str
    payment_id: str
    block_number: int
    batch_id: int | None


@dataclass(frozen=True, slots=True)
class CheckResult:
    chain_id: int
    head: int
    checked: int
    missing: list[Missing]
    new: list[uuid.UUID]  # of ``missing``, those no earlier check had found


async def check_once(
    ops: ToolRepository, chain: LogReader, *, window_blocks: int, record: bool = True
) -> CheckResult:
    """One comparison; records what is missing and moves the checkpoint (unless not
    ``record``: a dry run writes nothing)."""
    chain_id = await chain.chain_id()
    last_head, last_started, started = await ops.checkpoint(chain_id)
    now = await chain.block_number()
    below = now if last_head is None else min(now, last_head)
    since = None if last_started is None else last_started - CREDIT_SLACK
    rows = await ops.check_candidates(chain_id, max(0, below - window_blocks + 1), since)
    # Read after the candidates: a payout credited meanwhile is in a block at or below it,
    # unless the chain lost it.
    head = await chain.block_number()
    by_distributor: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in rows:
        by_distributor[row["distributor"]].append(row)
    missing: list[asyncpg.Record] = []
    back: list[uuid.UUID] = []
    for distributor, group in by_distributor.items():
        lowest = min(*(r["block_number"] for r in group), head)
        logs = await chain.distributed_logs(distributor, lowest, head)
        on_chain = {"0x" + p.payment_id.hex() for p in contracts.paid(logs)}
        for row in group:
            if row["payment_id"].lower() not in on_chain:
                missing.append(row)
            elif row["known_missing"]:
                back.append(row["event_id"])
    if record:
        ids = [r["event_id"] for r in missing]
        new = await ops.record_check(chain_id, head, started, ids, back)
    else:
        new = [r["event_id"] for r in missing if not r["known_missing"]]
    result = CheckResult(
        chain_id,
        head,
        len(rows),
        [
            Missing(r["event_id"], r["user_id"], r["payment_id"], r["block_number"], r["batch_id"])
            for r in missing
        ],
        new,
    )
    _report(result, back)
    return result


def _report(result: CheckResult, back: list[uuid.UUID]) -> None:
    metrics.CREDITED_NOT_ON_CHAIN.set(len(result.missing))
    if result.new:
        metrics.DEEP_REORGS.inc()
    metrics.CHAIN_CHECKED.set_to_current_time()
    fresh = set(result.new)
    for m in result.missing:
        if m.event_id in fresh:
            log.error(
                "credited_distribution_missing",
                event_id=str(m.event_id),
                user_id=m.user_id,
                payment_id=m.payment_id,
                block_number=m.block_number,
                head=result.head,
                alert=True,
            )
    for event_id in back:
        log.info("credited_distribution_back_on_chain", event_id=str(event_id))
    log.info("chain_checked", head=result.head, checked=result.checked, missing=len(result.missing))


class CheckerState(enum.StrEnum):
    NEW = "new"
    STARTING = "starting"  # running, no check finished yet: not ready
    CHECKING = "checking"  # a check finished: ready
    STOPPED = "stopped"


class ChainChecker:
    """The periodic check, until ``stop`` is set; an outage skips a round, loudly. Runs
    once: a second ``run`` raises. Its metrics server is watched: if it dies, so does the
    checker (an unscraped checker alerts no one)."""

    def __init__(
        self,
        settings: ChainCheckSettings,
        ops: ToolRepository,
        chain: LogReader,
        stop: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.ops = ops
        self.chain = chain
        self.stop = stop
        self.state = CheckerState.NEW

    async def run(self) -> None:
        if self.state is not CheckerState.NEW:
            raise RuntimeError(f"a chain checker runs once (it is {self.state})")
        self.state = CheckerState.STARTING
        port = self.settings.metrics_port
        ready = (CheckerState.CHECKING,)
        server = (
            asyncio.create_task(metrics.serve(port, lambda: self.state in ready), name="metrics")
            if port is not None
            else None
        )
        try:
            while not self.stop.is_set():
                await self.turn()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), self.settings.chain_check_interval_s)
                if server is not None and server.done():
                    server.result()  # its error stops the checker
        finally:
            self.state = CheckerState.STOPPED
            if server is not None:
                server.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await server

    async def turn(self) -> CheckResult | None:
        """``check``, an outage logged and skipped: the next round tries again."""
        try:
            return await self.check()
        except TransientError as exc:
            log.warning("chain_check_failed", error=str(exc))
            return None

    async def check(self) -> CheckResult | None:
        """One check; None if another checker holds the turn."""
        async with self.ops.chain_check_turn() as mine:
            if not mine:
                log.info("chain_check_skipped", reason="another checker holds the lock")
                return None
            result = await check_once(
                self.ops, self.chain, window_blocks=self.settings.chain_check_window_blocks
            )
        if self.state is CheckerState.STARTING:
            self.state = CheckerState.CHECKING
        return result
