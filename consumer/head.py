"""What every waiting event asks the node on each poll, asked once per process.

Dozens of events in flight each wanting the newest block, its base fee and the operator's
mined nonce every ``receipt_poll_s`` would spend the node on identical answers. Here one
caller fetches and the callers that arrive meanwhile, or within ``max_age_s`` after, share
its answer. A stale answer only delays: a head a poll old confirms a receipt a poll later,
a base fee a block old is covered by the fee's headroom (twice the base fee), a mined
nonce a poll old counts one strike later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from consumer.chain import Block, Chain

T = TypeVar("T")


class Shared(Generic[T]):
    """One fetch at a time, its answer reused for ``max_age_s``; a failed fetch is
    not remembered (the next caller fetches again)."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[T]],
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._answer: tuple[float, T] | None = None

    async def get(self) -> T:
        async with self._lock:
            if self._answer is None or self._clock() - self._answer[0] >= self._max_age_s:
                self._answer = (self._clock(), await self._fetch())
            return self._answer[1]


class Head:
    def __init__(self, chain: Chain, max_age_s: float) -> None:
        self._latest = Shared(chain.latest, max_age_s)
        self._mined_nonce = Shared(lambda: chain.nonce(pending=False), max_age_s)

    async def latest(self) -> Block:
        return await self._latest.get()

    async def mined_nonce(self) -> int:
        """The operator's nonce as of the latest block: every lower nonce is mined."""
        return await self._mined_nonce.get()
