"""What every event waiting for its receipt asks the node, asked once per process.

Dozens of events in flight each polling the newest block, its base fee, the operator's
mined nonce and their own receipt would spend the node (and our CPU, in web3) on
identical answers. Here the waiters share one clock tick, one fetch of each answer, and
one JSON-RPC batch for their receipts. A shared answer may be up to half a poll interval
old; that only delays: a stale head confirms a receipt a tick later, a base fee a block
old is covered by the fee's headroom (twice the base fee), a stale mined nonce counts a
strike a block later, a stale ``finalized`` block makes a batch final a tick later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from tokendist.consumer.chain import Block, Receipt
from tokendist.consumer.ports import ChainClient
from tokendist.core.errors import ChainUnavailable
from tokendist.core.finality import Tag

T = TypeVar("T")

# How long the first receipt lookup waits for the others woken by the same new block:
# each reads its transactions from PostgreSQL first, so they arrive a few ms apart.
GATHER_S = 0.01


class Shared(Generic[T]):
    """One fetch at a time, its answer reused for ``max_age_s``. Callers arriving during a
    fetch await that fetch; a failure reaches them all and is not remembered."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[T]],
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._clock = clock
        self._answer: tuple[float, T] | None = None
        self._fetching: asyncio.Task[T] | None = None

    async def get(self) -> T:
        if self._answer is not None and self._clock() - self._answer[0] < self._max_age_s:
            return self._answer[1]
        if self._fetching is None:
            self._fetching = asyncio.create_task(self._fetch_and_keep())
            self._fetching.add_done_callback(_retrieve)
        # Shielded: a caller cancelled mid-wait must not cancel the others' fetch.
        return await asyncio.shield(self._fetching)

    async def _fetch_and_keep(self) -> T:
        try:
            value = await self._fetch()
            self._answer = (self._clock(), value)
            return value
        finally:
            self._fetching = None


class Head:
    def __init__(self, chain: ChainClient, poll_s: float) -> None:
        self._poll_s = poll_s
        self._latest = Shared(chain.latest, poll_s / 2)
        self._mined_nonce = Shared(lambda: chain.nonce(pending=False), poll_s / 2)
        self._tagged = {tag: Shared(_tagged_block(chain, tag), poll_s / 2) for tag in Tag}
        self._chain = chain
        # Canonical block hashes as of one head (its hash): the batches mined in one block
        # ask for it once per head.
        self._hashes: tuple[str, dict[int, str | None]] = ("", {})
        self._tick: asyncio.Future[None] | None = None

    async def latest(self) -> Block:
        return await self._latest.get()

    async def advanced(self, seen: Block | None) -> Block:
        """The newest block, once it is not ``seen``: a receipt can only appear, or vanish
        in a reorganisation or a node restart, with a new head. A reorganisation may keep
        the head's number (``anvil_reorg`` does): its hash tells."""
        while True:
            block = await self._latest.get()
            if seen is None or (block.number, block.hash) != (seen.number, seen.hash):
                return block
            await asyncio.shield(self._next_tick())

    async def block_hash(self, number: int) -> str | None:
        """The hash of the canonical block ``number`` as of the latest head."""
        head = await self._latest.get()
        if number == head.number:
            return head.hash
        at, known = self._hashes
        if at != head.hash:
            self._hashes = at, known = head.hash, {}
        if number not in known:
            known[number] = await self._chain.block_hash(number)
        return known[number]

    async def tagged(self, tag: Tag) -> int | None:
        """The number of the node's block of ``tag`` (None: it has none yet)."""
        return await self._tagged[tag].get()

    async def mined_nonce(self) -> int:
        """The operator's nonce as of the latest block: every lower nonce is mined."""
        return await self._mined_nonce.get()

    def _next_tick(self) -> asyncio.Future[None]:
        # One timer for every waiter, so that they wake, and ask, together.
        if self._tick is None or self._tick.done():
            loop = asyncio.get_running_loop()
            tick = self._tick = loop.create_future()
            loop.call_later(self._poll_s, _resolve, tick)
        return self._tick


class Receipts:
    """Receipt lookups of the waiting events, sent together as one JSON-RPC batch."""

    def __init__(self, chain: ChainClient) -> None:
        self._chain = chain
        self._wanted: dict[str, asyncio.Future[Receipt | None]] = {}
        self._sending: asyncio.Task[None] | None = None

    async def get(self, tx_hashes: list[str]) -> dict[str, Receipt | None]:
        futures = {h: self._want(h) for h in tx_hashes}
        return {h: await asyncio.shield(f) for h, f in futures.items()}

    def _want(self, tx_hash: str) -> asyncio.Future[Receipt | None]:
        future = self._wanted.get(tx_hash)
        if future is None:
            future = self._wanted[tx_hash] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
        return future

    async def _send(self) -> None:
        wanted: dict[str, asyncio.Future[Receipt | None]] = {}
        try:
            await asyncio.sleep(GATHER_S)
            wanted, self._wanted, self._sending = self._wanted, {}, None
            found = await self._chain.receipts(list(wanted))
        except Exception as exc:
            for future in wanted.values():
                future.set_exception(exc)
            return
        except asyncio.CancelledError:  # only at shutdown; waiters retry, nothing hangs
            if self._sending is asyncio.current_task():
                wanted, self._wanted, self._sending = self._wanted, {}, None
            for future in wanted.values():
                future.set_exception(ChainUnavailable("receipt lookup cancelled"))
            raise
        for tx_hash, future in wanted.items():
            future.set_result(found[tx_hash])


def _tagged_block(chain: ChainClient, tag: Tag) -> Callable[[], Awaitable[int | None]]:
    return lambda: chain.tagged_block(tag)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a shared failure as seen: every waiter may have been cancelled meanwhile."""
    if not future.cancelled():
        future.exception()
