"""Many events waiting for receipts, few questions to the node: shared answers, one
clock tick, one JSON-RPC batch. And the calldata encoder against web3's own."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from web3 import AsyncWeb3

from tokendist.consumer import contracts
from tokendist.consumer.chain import Block, Chain, Receipt
from tokendist.consumer.head import Head, Receipts, Shared
from tokendist.core.errors import ChainUnavailable


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


async def test_a_cancelled_caller_does_not_cancel_the_fetch_the_others_wait_for() -> None:
    node = Node()
    node.answering.clear()
    shared = Shared(node.head, max_age_s=60)
    impatient = asyncio.create_task(shared.get())
    patient = asyncio.create_task(shared.get())
    await asyncio.sleep(0.01)
    impatient.cancel()
    node.answering.set()
    assert await patient == 101
    assert node.asked == 1


class FakeChain:
    """The node as the head and receipt helpers see it: block numbers and receipts."""

    def __init__(self) -> None:
        self.number = 7
        self.hash = "0x07"
        self.latest_calls = 0
        self.batches: list[list[str]] = []
        self.mined: dict[str, Receipt] = {}
        self.down = False

    async def latest(self) -> Block:
        self.latest_calls += 1
        return Block(self.number, 10**9, self.hash)

    async def nonce(self, *, pending: bool) -> int:
        return 0

    async def receipts(self, tx_hashes: list[str]) -> dict[str, Receipt | None]:
        self.batches.append(tx_hashes)
        if self.down:
            raise ChainUnavailable("connection refused")
        return {h: self.mined.get(h) for h in tx_hashes}


async def test_waiters_for_a_new_head_share_the_ticks_and_the_fetches() -> None:
    node = FakeChain()
    head = Head(cast(Chain, node), poll_s=0.02)
    waiters = [asyncio.create_task(head.advanced(Block(7, 10**9, "0x07"))) for _ in range(40)]
    await asyncio.sleep(0.1)
    assert not any(w.done() for w in waiters), "block 7 was seen already"
    asked_while_waiting = node.latest_calls
    assert asked_while_waiting <= 8, "one fetch per tick, not one per waiter per tick"
    node.number = 8
    blocks = await asyncio.gather(*waiters)
    assert {b.number for b in blocks} == {8}


async def test_a_reorganisation_that_keeps_the_heads_number_is_a_new_head() -> None:
    """``anvil_reorg`` replaces the last blocks and keeps the height: a waiter comparing
    numbers only would never wake to see its receipt gone."""
    node = FakeChain()
    head = Head(cast(Chain, node), poll_s=0.02)
    seen = await head.advanced(None)
    waiter = asyncio.create_task(head.advanced(seen))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    node.hash = "0x07bis"
    block = await waiter
    assert (block.number, block.hash) == (7, "0x07bis")


async def test_receipt_lookups_of_many_events_go_out_as_one_batch() -> None:
    node = FakeChain()
    node.mined["0xa"] = Receipt("0xa", 8, True)
    receipts = Receipts(cast(Chain, node))
    asking = [receipts.get([f"0x{c}"]) for c in "abcdef"] + [receipts.get(["0xa", "0xb"])]
    answers = await asyncio.gather(*asking)
    assert len(node.batches) == 1
    assert sorted(node.batches[0]) == ["0xa", "0xb", "0xc", "0xd", "0xe", "0xf"]
    assert answers[0] == {"0xa": Receipt("0xa", 8, True)}
    assert answers[1] == {"0xb": None}
    assert answers[-1] == {"0xa": Receipt("0xa", 8, True), "0xb": None}


async def test_a_failed_batch_fails_every_lookup_in_it_and_the_next_one_asks_again() -> None:
    node = FakeChain()
    receipts = Receipts(cast(Chain, node))
    node.down = True
    results = await asyncio.gather(
        receipts.get(["0x1"]), receipts.get(["0x2"]), return_exceptions=True
    )
    assert all(isinstance(r, ChainUnavailable) for r in results)
    node.down = False
    assert await receipts.get(["0x1"]) == {"0x1": None}
    assert len(node.batches) == 2


def test_batch_calldata_matches_web3s_encoding() -> None:
    payments = [
        (contracts.payment_id("inv-42"), "0x70997970c51812dc3a010c7d01b50e0d17dc79c8", 5),
        (contracts.payment_id("inv-43"), "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc", 2**96 - 1),
    ]
    web3_encoded: Any = (
        AsyncWeb3()
        .eth.contract(abi=contracts.abi("Distributor"))
        .encode_abi(
            "distributeBatch",
            args=[7, [p for p, _, _ in payments], [contracts.pack(t, a) for _, t, a in payments]],
        )
    )
    assert contracts.batch_calldata(7, payments) == web3_encoded
