"""``Shared``: many waiting events, one question to the node per interval."""

from __future__ import annotations

import asyncio

import pytest

from consumer.head import Shared
from tokendist.errors import ChainUnavailable


class Node:
    def __init__(self) -> None:
        self.asked = 0
        self.down = False
        self.answering = asyncio.Event()
        self.answering.set()

    async def head(self) -> int:
        self.asked += 1
        await self.answering.wait()
        if self.down:
            raise ChainUnavailable("connection refused")
        return 100 + self.asked


async def test_callers_waiting_together_share_one_fetch() -> None:
    node = Node()
    node.answering.clear()
    shared = Shared(node.head, max_age_s=60)
    waiting = [asyncio.create_task(shared.get()) for _ in range(50)]
    await asyncio.sleep(0.01)
    node.answering.set()
    assert await asyncio.gather(*waiting) == [101] * 50
    assert node.asked == 1


async def test_an_answer_is_reused_until_it_is_max_age_old() -> None:
    now = 0.0
    node = Node()
    shared = Shared(node.head, max_age_s=0.5, clock=lambda: now)
    assert await shared.get() == 101
    now = 0.49
    assert await shared.get() == 101
    now = 0.5
    assert await shared.get() == 102
    assert node.asked == 2


async def test_a_failed_fetch_is_not_remembered() -> None:
    node = Node()
    shared = Shared(node.head, max_age_s=60)
    node.down = True
    with pytest.raises(ChainUnavailable):
        await shared.get()
    node.down = False
    assert await shared.get() == 102
