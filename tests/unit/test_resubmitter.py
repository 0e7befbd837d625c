"""The resubmitter on in-memory fakes: stored transactions re-sent as stored after the
re-broadcast delay, in nonce order; stuck ones replaced after the fee-bump delay by a
sibling of the same nonce with fees raised by the percent, never above the cap; nothing
done for a nonce already mined. Time is the transactions' stored age, backdated."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.unit.fakes import (
    Crashed,
    FakeChain,
    FakeDeadLetters,
    FakeRepository,
    confirmed_payment,
    settings,
    world,
)
from tokendist.consumer.chain import Signed
from tokendist.consumer.processor import Processor
from tokendist.consumer.resubmitter import Resubmitter
from tokendist.consumer.states import State


async def stuck(
    repo: FakeRepository, chain: FakeChain, *, sent: bool = True, user: str = "user-1"
) -> Signed:
    """An event whose transaction is stored (and ``sent``) but not mined: the consumer
    that signed it died right after."""
    repo.approve(user)
    _, record = confirmed_payment(repo, user_id=user, investment_id=f"inv-{user}")
    chain.mine_on_send = False
    repo.crash_after = State.SUBMITTED if sent else State.SIGNED
    with pytest.raises(Crashed):
        await Processor(settings(), repo, chain, FakeDeadLetters()).handle(record)
    return chain.signatures[-1]


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 -- the fakes have no event to wait on
            await asyncio.sleep(0.001)


def resubmitter(repo: FakeRepository, chain: FakeChain, **changes: Any) -> Resubmitter:
    return Resubmitter(settings(**changes), repo, chain)


async def test_nothing_pending_sends_nothing() -> None:
    repo, chain, _ = world()
    assert await resubmitter(repo, chain).sweep() == 0
    assert chain.broadcasts == []


async def test_a_transaction_sent_within_the_delay_is_left_alone() -> None:
    repo, chain, _ = world()
    await stuck(repo, chain)
    assert await resubmitter(repo, chain).sweep() == 0
    assert len(chain.broadcasts) == 1
    assert len(chain.signatures) == 1


async def test_a_transaction_unsent_for_the_delay_is_sent_as_stored() -> None:
    repo, chain, _ = world()
    signed = await stuck(repo, chain, sent=False)
    s = settings()
    repo.backdate(signed.tx_hash, s.rebroadcast_after_s)

    assert await resubmitter(repo, chain).sweep() == 1

    assert chain.broadcasts == [signed.tx_hash]
    assert chain.signatures == [signed]
    assert repo.txs[signed.tx_hash].broadcast_at is not None
    assert await resubmitter(repo, chain).sweep() == 0  # just sent: the delay starts again


async def test_transactions_are_resent_in_nonce_order() -> None:
    repo, chain, _ = world()
    first = await stuck(repo, chain, sent=False, user="user-1")
    second = await stuck(repo, chain, sent=False, user="user-2")
    for tx in (first, second):
        repo.backdate(tx.tx_hash, settings().rebroadcast_after_s)

    assert await resubmitter(repo, chain).sweep() == 2

    assert (first.nonce, second.nonce) == (0, 1)
    assert chain.broadcasts == [first.tx_hash, second.tx_hash]


async def test_a_stuck_transaction_is_replaced_with_the_same_nonce_and_fees_raised() -> None:
    repo, chain, _ = world()
    old = await stuck(repo, chain)
    s = settings()
    repo.backdate(old.tx_hash, s.fee_bump_after_s)

    assert await resubmitter(repo, chain).sweep() == 1

    [_, new] = chain.signatures
    factor = 100 + s.fee_bump_percent
    tip = old.priority_fee * factor // 100 + 1
    assert (new.nonce, new.gas, new.priority_fee) == (old.nonce, old.gas, tip)
    assert new.max_fee_per_gas == max(old.max_fee_per_gas * factor // 100 + 1, 2 * chain.base + tip)
    stored = await repo.transactions(next(iter(repo.rows)))
    assert [t.tx_hash for t in stored] == [old.tx_hash, new.tx_hash]
    assert chain.broadcasts[-1] == new.tx_hash
    assert list(chain.pool) == [new.tx_hash]  # the node took it as the nonce's replacement


async def test_a_bump_above_the_fee_cap_is_not_signed_and_the_old_one_is_resent() -> None:
    repo, chain, _ = world()
    old = await stuck(repo, chain)
    s = settings(max_fee_wei=old.max_fee_per_gas)
    repo.backdate(old.tx_hash, s.fee_bump_after_s)

    with capture_logs() as logs:
        assert await Resubmitter(s, repo, chain).sweep() == 1

    assert chain.signatures == [old]
    assert chain.broadcasts == [old.tx_hash, old.tx_hash]
    assert [e["cap"] for e in logs if e["event"] == "fee_bump_capped"] == [old.max_fee_per_gas]
    assert len(repo.txs) == 1


async def test_nothing_is_done_for_a_transaction_whose_nonce_is_mined() -> None:
    repo, chain, _ = world()
    old = await stuck(repo, chain)
    chain.mine()  # mined; its owner has not confirmed it yet
    repo.backdate(old.tx_hash, settings().fee_bump_after_s)

    assert await resubmitter(repo, chain).sweep() == 0

    assert chain.signatures == [old]
    assert chain.broadcasts == [old.tx_hash]


async def test_a_refused_rebroadcast_is_reported_and_not_marked_sent() -> None:
    repo, chain, _ = world()
    signed = await stuck(repo, chain, sent=False)
    repo.backdate(signed.tx_hash, settings().rebroadcast_after_s)
    chain.send_refusal = "insufficient funds for gas"
    broadcast_at = repo.txs[signed.tx_hash].broadcast_at

    with capture_logs() as logs:
        assert await resubmitter(repo, chain).sweep() == 0

    assert [e["tx_hash"] for e in logs if e["event"] == "rebroadcast_refused"] == [signed.tx_hash]
    assert repo.txs[signed.tx_hash].broadcast_at == broadcast_at


async def test_of_two_members_bumping_at_once_one_replaces_and_the_other_stands_down() -> None:
    repo, chain, _ = world()
    old = await stuck(repo, chain)
    repo.backdate(old.tx_hash, settings().fee_bump_after_s)

    acted = await asyncio.gather(resubmitter(repo, chain).sweep(), resubmitter(repo, chain).sweep())

    assert sorted(acted) == [0, 1]
    assert len(repo.txs) == 2  # the old one and one replacement


async def test_an_outage_during_a_sweep_is_survived_and_the_next_sweep_runs() -> None:
    repo, chain, _ = world()
    signed = await stuck(repo, chain, sent=False)
    repo.backdate(signed.tx_hash, settings().rebroadcast_after_s)
    chain.down = True
    with capture_logs() as logs:
        running = asyncio.create_task(resubmitter(repo, chain, resubmit_interval_s=0.001).run())
        await until(lambda: any(e["event"] == "resubmit_sweep_failed" for e in logs))
        chain.down = False
        await until(lambda: bool(chain.broadcasts))
    running.cancel()
    assert chain.broadcasts == [signed.tx_hash]
