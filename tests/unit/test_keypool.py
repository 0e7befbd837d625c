"""The key pool on the fakes: a batch goes to the active key with the fewest unconfirmed
batches, least recently used on a tie; keys an operator drains or removes take none; a
key at its cap or resting waits; registering keeps what an operator decided."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from tests.unit.fake_chain import (
    CHAIN_ID,
    DISTRIBUTOR,
    SENDER,
    SENDER_2,
    SENDER_3,
    FakeChain,
    FakeNode,
)
from tests.unit.fakes import FakeRepository
from tokendist.consumer import keypool
from tokendist.consumer.batching.states import BatchState
from tokendist.consumer.keypool import KeyPool, KeyState
from tokendist.consumer.repository import Batch


def in_flight(repo: FakeRepository, sender: str, n: int = 1) -> list[int]:
    """``n`` unconfirmed batches of ``sender``; returns their ids."""
    ids = []
    for _ in range(n):
        batch_id = len(repo.batches) + 1
        repo.batches[batch_id] = Batch(
            batch_id,
            CHAIN_ID,
            sender,
            batch_id,
            DISTRIBUTOR,
            0,
            1,
            b"",
            0,
            BatchState.SUBMITTED,
            None,
            None,
            None,
            None,
        )
        ids.append(batch_id)
    return ids


async def pool_of(senders: list[str], *, cap: int = 2) -> tuple[KeyPool, FakeRepository]:
    repo, node = FakeRepository(), FakeNode()
    pool = KeyPool([FakeChain(node, s) for s in senders], repo, cap=cap, poll_s=0.001)
    await pool.register()
    return pool, repo


def test_a_pool_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        KeyPool([], FakeRepository(), cap=1, poll_s=0.001)


async def test_the_key_with_the_fewest_unconfirmed_batches_takes_the_next_one() -> None:
    pool, repo = await pool_of([SENDER, SENDER_2, SENDER_3], cap=4)
    in_flight(repo, SENDER, 2)
    in_flight(repo, SENDER_2, 1)
    in_flight(repo, SENDER_3, 3)
    assert (await pool.acquire()).sender == SENDER_2


async def test_on_a_tie_the_least_recently_used_key_takes_the_next_batch() -> None:
    pool, _ = await pool_of([SENDER, SENDER_2, SENDER_3])
    chosen = [(await pool.acquire()).sender for _ in range(4)]
    assert chosen == [SENDER, SENDER_2, SENDER_3, SENDER]


@pytest.mark.parametrize("state", [KeyState.DRAINING, KeyState.REMOVED])
async def test_a_key_an_operator_took_out_takes_no_batch_and_registering_keeps_it_out(
    state: KeyState,
) -> None:
    pool, repo = await pool_of([SENDER, SENDER_2])
    repo.keys[(CHAIN_ID, SENDER)] = state
    await pool.register()  # a restart: the operator's decision stands
    assert repo.keys[(CHAIN_ID, SENDER)] == state
    assert {(await pool.acquire()).sender for _ in range(3)} == {SENDER_2}


async def test_a_key_at_its_cap_waits_until_one_of_its_batches_is_confirmed() -> None:
    pool, repo = await pool_of([SENDER], cap=2)
    first, _ = in_flight(repo, SENDER, 2)
    acquiring = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)  # several polls: none may hand out the key
    assert not acquiring.done()
    repo.batches[first] = replace(repo.batches[first], state=BatchState.CONFIRMED)
    assert (await acquiring).sender == SENDER


async def test_a_resting_key_is_left_out_until_its_rest_is_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool, _ = await pool_of([SENDER, SENDER_2])
    pool.rest(SENDER, "reverted: AccessControlUnauthorizedAccount")
    assert {(await pool.acquire()).sender for _ in range(3)} == {SENDER_2}

    monkeypatch.setattr(keypool, "REST_S", 0.0)
    pool.rest(SENDER_2, "insufficient funds for gas")  # over at once; SENDER still rests
    assert {(await pool.acquire()).sender for _ in range(3)} == {SENDER_2}
